{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "flowedge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, or <release>-<chart> when the
release name does not contain the chart name. The edge's resources hang off it.
*/}}
{{- define "flowedge.fullname" -}}
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

{{- define "flowedge.edge.fullname" -}}
{{- printf "%s-edge" (include "flowedge.fullname" .) | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "flowedge.edge.adminService" -}}
{{- printf "%s-admin" (include "flowedge.edge.fullname" .) }}
{{- end }}

{{- define "flowedge.edge.configName" -}}
{{- printf "%s-config" (include "flowedge.edge.fullname" .) }}
{{- end }}

{{/* api StatefulSet and headless Service name (pods <name>-N.<name>). */}}
{{- define "flowedge.api.name" -}}
{{- .Values.api.name | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "flowedge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "flowedge.labels" -}}
helm.sh/chart: {{ include "flowedge.chart" . }}
app.kubernetes.io/part-of: flowedge
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
{{- end }}

{{/*
Selector labels. The component label is what the NetworkPolicy keys on: edge
pods of any release of this chart in the namespace may reach the backends.
*/}}
{{- define "flowedge.edge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flowedge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: edge
{{- end }}

{{- define "flowedge.api.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flowedge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ include "flowedge.api.name" . }}
{{- end }}

{{- define "flowedge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flowedge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "flowedge.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
{{- end }}

{{/* Backend URL template for edge.toml: the api headless Service's pod names. */}}
{{- define "flowedge.backendTemplate" -}}
{{- if .Values.edge.config.backends.template -}}
{{ .Values.edge.config.backends.template }}
{{- else -}}
{{- $api := include "flowedge.api.name" . -}}
http://{{ $api }}-{N}.{{ $api }}:{{ .Values.api.port }}
{{- end }}
{{- end }}

{{/*
A TOML value from a values.yaml value: strings and lists as JSON (valid TOML), booleans as is, numbers
as integers (Helm reads YAML numbers as float64, which would print 1.073741824e+09).
*/}}
{{- define "flowedge.toml" -}}
{{- if or (kindIs "string" .) (kindIs "slice" .) -}}
{{ toJson . }}
{{- else if kindIs "bool" . -}}
{{ . }}
{{- else -}}
{{ int64 . }}
{{- end }}
{{- end }}

{{/* Render the keys of one edge.toml section, one per line, skipping null values. */}}
{{- define "flowedge.tomlKeys" -}}
{{- $lines := list }}
{{- range $k, $v := . }}
{{- if not (kindIs "invalid" $v) }}
{{- $lines = append $lines (printf "%s = %s" $k (include "flowedge.toml" $v)) }}
{{- end }}
{{- end }}
{{- join "\n" $lines }}
{{- end }}

{{/* Pod security context and the shared container security context. */}}
{{- define "flowedge.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "flowedge.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end }}
