//! The round-trip property `restore(rewrite(x)) == x` over generated pods, plus: rewriting
//! rewrite's output changes nothing, and a refused pod is left unchanged.

use proptest::prelude::*;

use crate::probes::*;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, GRPCAction, HTTPGetAction, LifecycleHandler, PodSpec, Probe,
    TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A handler, as indices into small tables of interesting values: the proptest strategies
/// build these small descriptions, and the pod is built from them in the test body, because
/// strategies over the large Kubernetes structs overflow the test thread's stack.
#[derive(Debug, Clone, Copy)]
struct Shape {
    port: u8,
    path: u8,
    host: u8,
    scheme: u8,
    headers: u8,
    extra: u8,
}

const PORTS: [(i32, Option<&str>); 8] = [
    (80, None),
    (15020, None),
    (15021, None),
    (1, None),
    (65535, None),
    (0, None),
    (0, Some("http")),
    (0, Some("admin")),
];
const STRINGS: [Option<&str>; 4] = [None, Some(""), Some("HTTPS"), Some("/x&<y>")];

fn text(index: u8) -> Option<String> {
    STRINGS[usize::from(index) % STRINGS.len()].map(str::to_owned)
}

impl Shape {
    fn port(self) -> IntOrString {
        match PORTS[usize::from(self.port) % PORTS.len()] {
            (_, Some(name)) => IntOrString::String(name.to_owned()),
            (number, None) => IntOrString::Int(number),
        }
    }

    fn http(self) -> HTTPGetAction {
        HTTPGetAction {
            port: self.port(),
            path: text(self.path),
            host: text(self.host),
            scheme: text(self.scheme),
            http_headers: match self.headers % 3 {
                0 => None,
                1 => Some(vec![]),
                _ => Some(vec![k8s_openapi::api::core::v1::HTTPHeader {
                    name: "Host".to_owned(),
                    value: "a&b".to_owned(),
                }]),
            },
            protocol: text(self.extra),
        }
    }

    fn tcp(self) -> TCPSocketAction {
        TCPSocketAction {
            port: self.port(),
            host: text(self.host),
        }
    }

    fn grpc(self) -> GRPCAction {
        let port = match PORTS[usize::from(self.port) % PORTS.len()] {
            (_, Some(_)) => 9090,
            (number, None) => number,
        };
        GRPCAction {
            port,
            service: text(self.path),
            mode: text(self.extra),
        }
    }
}

fn arb_shape() -> impl Strategy<Value = Shape> {
    (0..8u8, 0..4u8, 0..4u8, 0..4u8, 0..3u8, 0..4u8).prop_map(
        |(port, path, host, scheme, headers, extra)| Shape {
            port,
            path,
            host,
            scheme,
            headers,
            extra,
        },
    )
}

/// httpGet, tcpSocket, grpc, exec, timeoutSeconds.
type ProbeShape = (
    Option<Shape>,
    Option<Shape>,
    Option<Shape>,
    bool,
    Option<u8>,
);

fn arb_probe() -> impl Strategy<Value = Option<ProbeShape>> {
    prop::option::of((
        prop::option::of(arb_shape()),
        prop::option::of(arb_shape()),
        prop::option::of(arb_shape()),
        any::<bool>(),
        prop::option::of(0..3u8),
    ))
}

fn build_probe(shape: Option<ProbeShape>) -> Option<Probe> {
    let (http, tcp, grpc, exec, timeout) = shape?;
    Some(Probe {
        http_get: http.map(Shape::http),
        tcp_socket: tcp.map(Shape::tcp),
        grpc: grpc.map(Shape::grpc),
        exec: exec.then(|| k8s_openapi::api::core::v1::ExecAction {
            command: Some(vec!["true".to_owned()]),
        }),
        timeout_seconds: timeout.map(i32::from),
        period_seconds: Some(7),
        ..Probe::default()
    })
}

/// httpGet, tcpSocket.
type HookShape = (Option<Shape>, Option<Shape>);

fn arb_hook() -> impl Strategy<Value = Option<HookShape>> {
    prop::option::of((prop::option::of(arb_shape()), prop::option::of(arb_shape())))
}

fn build_hook(shape: Option<HookShape>) -> Option<LifecycleHandler> {
    let (http, tcp) = shape?;
    Some(LifecycleHandler {
        http_get: http.map(Shape::http),
        tcp_socket: tcp.map(Shape::tcp),
        ..LifecycleHandler::default()
    })
}

/// Probes, hooks, the number of the port named `http`, restartPolicy Always.
type ContainerShape = (
    [Option<ProbeShape>; 3],
    Option<[Option<HookShape>; 2]>,
    u8,
    bool,
);

fn arb_container() -> impl Strategy<Value = ContainerShape> {
    (
        [arb_probe(), arb_probe(), arb_probe()],
        prop::option::of([arb_hook(), arb_hook()]),
        0..3u8,
        any::<bool>(),
    )
}

fn build_container(name: &str, shape: ContainerShape) -> Container {
    let ([readiness, liveness, startup], hooks, http_port, always) = shape;
    let mut c = Container {
        name: name.to_owned(),
        ..Container::default()
    };
    c.readiness_probe = build_probe(readiness);
    c.liveness_probe = build_probe(liveness);
    c.startup_probe = build_probe(startup);
    c.lifecycle = hooks.map(
        |[post_start, pre_stop]| k8s_openapi::api::core::v1::Lifecycle {
            post_start: build_hook(post_start),
            pre_stop: build_hook(pre_stop),
            ..Default::default()
        },
    );
    c.ports = Some(vec![ContainerPort {
        name: Some("http".to_owned()),
        container_port: [80, 15020, 0][usize::from(http_port) % 3],
        ..ContainerPort::default()
    }]);
    c.restart_policy = always.then(|| "Always".to_owned());
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// restore(rewrite(x)) == x for every pod that rewrite accepts, rewriting its output
    /// again changes nothing, and a refused pod is left unchanged.
    #[test]
    fn restore_inverts_rewrite(
        init in arb_container(),
        app in arb_container(),
        proxy in arb_container(),
        status_port in prop_oneof![Just(15020u16), Just(15021u16), Just(0u16)],
    ) {
        let input = PodSpec {
            init_containers: Some(vec![build_container("side", init)]),
            containers: vec![build_container("app", app), build_container("istio-proxy", proxy)],
            ..PodSpec::default()
        };
        let mut got = input.clone();
        match rewrite(&mut got, status_port) {
            Ok(Some(json)) => {
                let mut again = got.clone();
                prop_assert_eq!(rewrite(&mut again, status_port), Ok(None));
                prop_assert_eq!(&again, &got);
                prop_assert_eq!(restore(&mut got, &json), Ok(()));
                prop_assert_eq!(got, input);
            }
            Ok(None) | Err(_) => prop_assert_eq!(got, input),
        }
    }
}
