{{- define "manifold.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "manifold.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "manifold.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "manifold.serviceAccountName" -}}
{{- default (include "manifold.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The rules the operator needs on its kinds, Secrets and Events: exactly
     the verbs it uses, nothing more. */}}
{{- define "manifold.rules" -}}
- apiGroups: ["manifold.dev"]
  resources: ["workspaces", "connections", "workspaceconnections"]
  verbs: ["get", "list", "watch", "patch"]
# The attachments of a Workspace's connection selectors, owned by it.
- apiGroups: ["manifold.dev"]
  resources: ["workspaceconnections"]
  verbs: ["create", "delete"]
- apiGroups: ["manifold.dev"]
  resources: ["workspaces/status", "connections/status", "workspaceconnections/status"]
  verbs: ["patch"]
- apiGroups: ["manifold.dev"]
  resources: ["workspaces/finalizers", "workspaceconnections/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Whether a namespace is being deleted: its Workspaces then wait for an
# unreachable database for terminatingCleanupTimeout only.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
{{- end -}}
