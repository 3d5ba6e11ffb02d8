{{- define "nodeos.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nodeos.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "nodeos.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "nodeos.labels" -}}
app.kubernetes.io/name: {{ include "nodeos.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "nodeos.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nodeos.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "nodeos.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "nodeos.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Namespaces whose Secrets osApi.talosconfigSecret may name, as a JSON list (default: the
release namespace).
*/}}
{{- define "nodeos.secretNamespaces" -}}
{{- toJson (default (list .Release.Namespace) .Values.osApi.secretNamespaces) -}}
{{- end }}

{{/* An alert's labels: its severity plus metrics.prometheusRule.additionalRuleLabels. */}}
{{- define "nodeos.alertLabels" -}}
{{- $rule := index . 0 -}}
{{- toYaml (merge (dict "severity" (index . 1)) ($rule.additionalRuleLabels | default dict)) }}
{{- end }}
