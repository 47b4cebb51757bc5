{{/* The chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "sidegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The resource name prefix. */}}
{{- define "sidegate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sidegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: name and instance only (they must never change). */}}
{{- define "sidegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sidegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sidegate.labels" -}}
helm.sh/chart: {{ include "sidegate.chart" . }}
{{ include "sidegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sidegate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "sidegate.webhookName" -}}
{{- printf "%s-webhook" (include "sidegate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sidegate.webhookSelectorLabels" -}}
{{ include "sidegate.selectorLabels" . }}
app.kubernetes.io/component: webhook
{{- end }}

{{- define "sidegate.serviceAccountName" -}}
{{- include "sidegate.webhookName" . }}
{{- end }}

{{- define "sidegate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "sidegate.tlsSecretName" -}}
{{- if eq .Values.webhook.tls.mode "external" }}
{{- .Values.webhook.tls.external.secretName }}
{{- else }}
{{- printf "%s-tls" (include "sidegate.webhookName" .) }}
{{- end }}
{{- end }}

{{/* The Service's DNS name: what the API server verifies the certificate against. */}}
{{- define "sidegate.webhookHost" -}}
{{- printf "%s.%s.svc" (include "sidegate.webhookName" .) .Release.Namespace }}
{{- end }}

{{/*
The Helm-generated CA and serving certificate, made once per render and cached
on the values so the Secret, the webhook configuration and the Deployment's
checksum agree. An existing Secret is reused, so upgrades keep the certificate.
*/}}
{{- define "sidegate.generatedTLS" -}}
{{- if not (hasKey .Values.webhook.tls "generated") }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "sidegate.tlsSecretName" .) }}
{{- if and $existing $existing.data (index $existing.data "ca.crt") (index $existing.data "tls.crt") (index $existing.data "tls.key") }}
{{- $_ := set .Values.webhook.tls "generated" (dict "ca" (index $existing.data "ca.crt" | b64dec) "crt" (index $existing.data "tls.crt" | b64dec) "key" (index $existing.data "tls.key" | b64dec)) }}
{{- else }}
{{- $host := include "sidegate.webhookHost" . }}
{{- $ca := genCA (printf "%s-ca" (include "sidegate.webhookName" .)) (int .Values.webhook.tls.validityDays) }}
{{- $cert := genSignedCert $host nil (list $host (printf "%s.cluster.local" $host)) (int .Values.webhook.tls.validityDays) $ca }}
{{- $_ := set .Values.webhook.tls "generated" (dict "ca" $ca.Cert "crt" $cert.Cert "key" $cert.Key) }}
{{- end }}
{{- end }}
{{- toJson .Values.webhook.tls.generated }}
{{- end }}

{{/* The injector settings (the injector ConfigMap's settings.yaml). */}}
{{- define "sidegate.injectorSettings" -}}
image: {{ include "sidegate.image" . | quote }}
proxyImage: {{ .Values.sidecar.proxyImage | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
nativeSidecars: {{ .Values.sidecar.native }}
providers: {{ toJson .Values.sidecar.providers }}
capture: {{ .Values.sidecar.capture }}
capturePorts: {{ toJson .Values.sidecar.capturePorts }}
listenPort: {{ .Values.sidecar.listenPort }}
readyPort: {{ .Values.sidecar.readyPort }}
proxyUID: {{ .Values.sidecar.uid }}
concurrency: {{ .Values.sidecar.concurrency }}
drainSeconds: {{ .Values.sidecar.drainSeconds }}
configMap: {{ .Values.gateway.configMapName }}
configKey: sidegate.yaml
secretName: {{ .Values.gateway.keysSecretName }}
excludedNamespaces: {{ toJson (include "sidegate.excludedNamespaces" . | fromJsonArray) }}
proxyResources: {{ toJson .Values.sidecar.proxyResources }}
extprocResources: {{ toJson .Values.sidecar.extprocResources }}
{{- $prom := .Values.telemetry.prometheus }}
metricsPath: {{ if $prom.enabled }}{{ $prom.path | quote }}{{ else }}null{{ end }}
scrapeAnnotations: {{ and $prom.enabled $prom.scrapeAnnotations }}
otlp: {{ toJson .Values.telemetry.otlp }}
{{- end }}

{{/* The gateway config's telemetry.prometheus section, from the chart's values. */}}
{{- define "sidegate.prometheusConfig" -}}
{{- $prom := .Values.telemetry.prometheus }}
enabled: {{ $prom.enabled }}
path: {{ $prom.path | quote }}
envoy_stats: {{ $prom.envoyStats }}
{{- end }}

{{- define "sidegate.excludedNamespaces" -}}
{{- toJson (concat (list .Release.Namespace "kube-system") .Values.webhook.excludeNamespaces | uniq) }}
{{- end }}

{{- define "sidegate.redisName" -}}
{{- printf "%s-redis" (include "sidegate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sidegate.redisSelectorLabels" -}}
{{ include "sidegate.selectorLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{/*
The gateway config's `state` section from the state and redis values, as YAML;
empty when no shared state is configured (sidecars then count in memory).
Exactly one Redis source: the in-chart Redis, a URL, or a URL in the keys Secret.
*/}}
{{- define "sidegate.state" -}}
{{- $r := .Values.state.redis }}
{{- $sources := 0 }}
{{- if .Values.redis.enabled }}{{ $sources = add1 $sources }}{{ end }}
{{- if $r.url }}{{ $sources = add1 $sources }}{{ end }}
{{- if $r.urlSecretKey }}{{ $sources = add1 $sources }}{{ end }}
{{- if gt $sources 1 }}
{{- fail "shared state: set only one of redis.enabled, state.redis.url and state.redis.urlSecretKey" }}
{{- end }}
{{- if eq $sources 1 }}
redis:
  {{- if .Values.redis.enabled }}
  url: {{ printf "redis://%s.%s.svc:6379/0" (include "sidegate.redisName" .) .Release.Namespace | quote }}
  {{- else if $r.url }}
  url: {{ $r.url | quote }}
  {{- else }}
  url:
    file: {{ printf "/var/run/secrets/sidegate/keys/%s" $r.urlSecretKey | quote }}
  {{- end }}
  timeout: {{ $r.timeout | quote }}
  key_prefix: {{ $r.keyPrefix | quote }}
  {{- if and $r.cluster (not .Values.redis.enabled) }}
  cluster: true
  {{- end }}
on_unavailable: {{ .Values.state.onUnavailable }}
{{- end }}
{{- end }}
