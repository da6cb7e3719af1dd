use std::sync::Arc;

use hyper::{Method, StatusCode};

use super::*;
use crate::admin::http::testing::{Running, call, get, within};

#[test]
fn readiness_needs_config_and_listeners_and_no_drain() {
    struct Case {
        config: bool,
        listeners: bool,
        draining: bool,
        want: Result<(), NotReady>,
    }
    let cases = [
        Case {
            config: false,
            listeners: false,
            draining: false,
            want: Err(NotReady::ConfigNotLoaded),
        },
        Case {
            config: false,
            listeners: true,
            draining: false,
            want: Err(NotReady::ConfigNotLoaded),
        },
        Case {
            config: true,
            listeners: false,
            draining: false,
            want: Err(NotReady::ListenersNotBound),
        },
        Case {
            config: true,
            listeners: true,
            draining: false,
            want: Ok(()),
        },
        Case {
            config: true,
            listeners: true,
            draining: true,
            want: Err(NotReady::Draining),
        },
        Case {
            config: false,
            listeners: false,
            draining: true,
            want: Err(NotReady::Draining),
        },
    ];
    for case in cases {
        let readiness = Readiness::new();
        readiness.set_config_loaded(case.config);
        readiness.set_listeners_bound(case.listeners);
        if case.draining {
            assert!(readiness.start_draining());
            assert!(
                !readiness.start_draining(),
                "only the first call starts draining"
            );
        }
        assert_eq!(
            readiness.check(),
            case.want,
            "config={} listeners={} draining={}",
            case.config,
            case.listeners,
            case.draining
        );
        assert_eq!(readiness.is_ready(), case.want.is_ok());
    }
}

#[test]
fn server_state_names() {
    assert_eq!(NotReady::Draining.server_state(), "DRAINING");
    assert_eq!(NotReady::ConfigNotLoaded.server_state(), "INITIALIZING");
    assert_eq!(NotReady::ListenersNotBound.server_state(), "INITIALIZING");
}

#[tokio::test]
async fn drained_resolves_when_draining_starts() {
    let readiness = Arc::new(Readiness::new());
    let waiter = tokio::spawn({
        let readiness = readiness.clone();
        async move { readiness.drained().await }
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    readiness.start_draining();
    within("drain waiter", waiter).await.expect("waiter task");
    // Already draining: at once.
    within("second drain waiter", readiness.drained()).await;
}

#[tokio::test]
async fn health_server_follows_readiness() {
    let readiness = Arc::new(Readiness::new());
    let server = Running::start({
        let readiness = readiness.clone();
        |listener, shutdown| serve_health(listener, readiness, shutdown)
    })
    .await;
    let address = server.address;

    let answer = get(address, READY_PATH).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer.body.contains("no configuration loaded"),
        "{}",
        answer.body
    );

    readiness.set_config_loaded(true);
    let answer = get(address, READY_PATH).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.body.contains("listeners"), "{}", answer.body);

    readiness.set_listeners_bound(true);
    assert_eq!(get(address, READY_PATH).await.status, StatusCode::OK);
    assert_eq!(
        call(address, Method::HEAD, READY_PATH, &[]).await.status,
        StatusCode::OK
    );

    readiness.start_draining();
    let answer = get(address, READY_PATH).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.body.contains("draining"), "{}", answer.body);

    assert_eq!(
        get(address, "/healthz/live").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(address, Method::POST, READY_PATH, &[]).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    server.stop().await;
}
