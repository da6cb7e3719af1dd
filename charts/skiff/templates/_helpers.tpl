{{/*
Names. Kubernetes limits most names to 63 characters, so every prefix is cut short enough to
leave room for its suffix.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "skiff.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* `<release>-<chart>`, or just the release name when it already contains the chart name. */}}
{{- define "skiff.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "skiff.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The injector's Deployment, Service, PodDisruptionBudget and Certificate. */}}
{{- define "skiff.injector.name" -}}
{{- printf "%s-injector" (include "skiff.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}

{{/* The ConfigMap holding the injection config. */}}
{{- define "skiff.configMapName" -}}
{{- printf "%s-config" (include "skiff.injector.name" . | trunc 56 | trimSuffix "-") -}}
{{- end -}}

{{/* The Secret cert-manager writes the serving certificate to. */}}
{{- define "skiff.tlsSecretName" -}}
{{- printf "%s-tls" (include "skiff.injector.name" . | trunc 59 | trimSuffix "-") -}}
{{- end -}}

{{/*
The Secret through which the injector replicas share their CA and serving certificate in
self-managed mode (`serve --cert-secret`). The injector creates it at run time, so it is not
part of the release: `helm uninstall` leaves it behind.
*/}}
{{- define "skiff.certSecretName" -}}
{{- .Values.certSecretName | default (printf "%s-certs" (include "skiff.injector.name" . | trunc 57 | trimSuffix "-")) -}}
{{- end -}}

{{/* The self-signed Issuer created when certManager.issuerRef is empty. */}}
{{- define "skiff.issuerName" -}}
{{- printf "%s-selfsigned" (include "skiff.injector.name" . | trunc 52 | trimSuffix "-") -}}
{{- end -}}

{{/*
Cluster-scoped objects (the MutatingWebhookConfiguration, the ClusterRole and its binding)
carry the release namespace in their name: release names are unique per namespace only, and
two releases of the same name in two namespaces must not fight over one object. Their names
are not limited to 63 characters.
*/}}
{{- define "skiff.webhookConfigName" -}}
{{- printf "%s-sidecar-injector-%s" (include "skiff.fullname" .) .Release.Namespace | trimSuffix "-" -}}
{{- end -}}

{{- define "skiff.clusterRoleName" -}}
{{- printf "%s-injector-%s" (include "skiff.fullname" .) .Release.Namespace | trimSuffix "-" -}}
{{- end -}}

{{/* The injector's ServiceAccount. */}}
{{- define "skiff.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "skiff.injector.name" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Labels. The selector labels never change after the first install (a Deployment's selector is
immutable), so they hold only the chart name, the release and the component.
*/}}
{{- define "skiff.selectorLabels" -}}
app.kubernetes.io/name: {{ include "skiff.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: injector
{{- end -}}

{{- define "skiff.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "skiff.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: skiff
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* `<repository>:<tag>`, the tag defaulting to the chart's appVersion. Argument: the image's values. */}}
{{- define "skiff.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion | toString -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}

{{/* Self-managed certificates unless cert-manager is enabled. */}}
{{- define "skiff.selfManaged" -}}
{{- if not .Values.certManager.enabled -}}true{{- end -}}
{{- end -}}

{{/*
The injection config: values.injection plus what the chart decides itself (the images and
the revision). Setting those three in values.injection would leave two places for one
setting, one of them silently ignored, so it is refused.
*/}}
{{- define "skiff.injectionConfig" -}}
{{- $config := deepCopy (.Values.injection | default dict) -}}
{{- range $key, $value := dict "proxyImage" "images.proxy" "initImage" "images.init" "revision" "revision" -}}
{{- if hasKey $config $key -}}
{{- fail (printf "injection.%s is set by the chart from %s; set that value instead" $key $value) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $config "revision" .Values.revision -}}
{{- $_ = set $config "proxyImage" (include "skiff.image" (dict "image" .Values.images.proxy "root" .)) -}}
{{- $_ = set $config "initImage" (include "skiff.image" (dict "image" .Values.images.init "root" .)) -}}
{{- toYaml $config -}}
{{- end -}}
