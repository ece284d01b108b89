{{/* Names, labels and small shared pieces. */}}

{{- define "sam2.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sam2.fullname" -}}
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

{{- define "sam2.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sam2.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sam2.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sam2.labels" -}}
helm.sh/chart: {{ include "sam2.chart" . }}
{{ include "sam2.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sam2.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sam2.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image: the tag defaults to appVersion, with "-cuda" for GPU replicas; a digest pins it. */}}
{{- define "sam2.image" -}}
{{- $tag := .Values.image.tag | default (printf "%s%s" .Chart.AppVersion (ternary "-cuda" "" .Values.gpu.enabled)) }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- with .Values.image.digest }}@{{ . }}{{ end }}
{{- end }}

{{- define "sam2.trackServiceName" -}}
{{- printf "%s-track" (include "sam2.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sam2.authSecretName" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "sam2.fullname" .)) }}
{{- end }}

{{- define "sam2.redisName" -}}
{{- printf "%s-redis" (include "sam2.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sam2.redisSecretName" -}}
{{- .Values.redis.bundled.existingSecret | default (include "sam2.redisName" .) }}
{{- end }}

{{- define "sam2.redisSelectorLabels" -}}
{{ include "sam2.selectorLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{/* A setting as an environment value. Helm reads numbers from values files as floats, and `toString`
     writes 4294967296 as "4.294967296e+09", which the service refuses: whole numbers are written as integers. */}}
{{- define "sam2.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end }}

{{/* The Deployment's progress deadline: above the startup probe's budget, or a normal first start (download,
     load, warm-up) would be reported as a failed rollout. */}}
{{- define "sam2.progressDeadlineSeconds" -}}
{{- $startup := mul .Values.probes.startup.periodSeconds .Values.probes.startup.failureThreshold }}
{{- with .Values.rollout.progressDeadlineSeconds }}
{{- if le (int .) (int $startup) }}
{{- fail (printf "rollout.progressDeadlineSeconds (%d) must exceed the startup probe's budget (%d s) plus the image pull" (int .) (int $startup)) }}
{{- end }}
{{- . }}
{{- else }}
{{- add $startup .Values.rollout.imagePullSeconds }}
{{- end }}
{{- end }}

{{/* What the gateway must allow, from the service settings (defaults: service/settings.py; a test keeps
     them equal). One place for the HTTPRoutes and the Ingresses. */}}
{{- define "sam2.setting" -}}
{{- $defaults := dict "request_timeout" 30 "max_image_bytes" 20971520 }}
{{- $s := .root.Values.settings | default dict }}
{{- if hasKey $s .name }}{{ index $s .name }}{{ else }}{{ index $defaults .name }}{{ end }}
{{- end }}

{{- define "sam2.gateway.requestTimeoutSeconds" -}}
{{- $queue := include "sam2.setting" (dict "root" . "name" "request_timeout") | float64 | ceil | int }}
{{- add $queue .Values.gateway.computeSeconds }}
{{- end }}

{{/* Settings.max_request_bytes: a base64 image (4/3 of max_image_bytes) plus 1 MiB for prompts and framing. */}}
{{- define "sam2.gateway.maxBodyBytes" -}}
{{- $image := include "sam2.setting" (dict "root" . "name" "max_image_bytes") | float64 | int64 }}
{{- add (div (mul $image 4) 3) 1048576 }}
{{- end }}

{{/* The paths the gateway publishes (a JSON list): never /metrics; /docs and /openapi.json on request. */}}
{{- define "sam2.gateway.publicPaths" -}}
{{- $paths := list "/v1" "/healthz" "/readyz" }}
{{- if .Values.gateway.publishDocs }}
{{- $paths = concat $paths (list "/docs" "/openapi.json") }}
{{- end }}
{{- toJson $paths }}
{{- end }}

{{/* Where checkpoints come from and what they must hash to: the service container and the seeding init container. */}}
{{- define "sam2.weightsEnv" -}}
{{- with .Values.weights.url }}
- name: SAM2_WEIGHTS_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.weights.sha256 }}
- name: SAM2_WEIGHTS_SHA256
  value: {{ . | lower | quote }}
{{- end }}
{{- end }}
