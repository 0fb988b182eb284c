{{- define "nodeguard.name" -}}{{ .Release.Name }}{{- end -}}
{{- define "nodeguard.labels" -}}
app.kubernetes.io/name: nodeguard
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "nodeguard.user" -}}system:serviceaccount:{{ .Release.Namespace }}:{{ include "nodeguard.name" . }}{{- end -}}
{{- define "nodeguard.remediating" -}}{{ if or .Values.remediation.restartKubelet.enabled .Values.remediation.taints }}true{{ end }}{{- end -}}
