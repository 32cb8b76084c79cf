{{/*
The name of the controller's namespaced objects. Fixed, not derived from the release name:
gateway Pods dial the Service `sluice-controller`, and the controller's Lease has that name too.
*/}}
{{- define "sluice.controllerFullname" -}}
sluice-controller
{{- end -}}

{{/*
The name of the cluster-scoped RBAC objects: qualified with the release namespace, so that
installs in two namespaces do not share them.
*/}}
{{- define "sluice.clusterRoleName" -}}
{{- printf "sluice-controller-%s" .Release.Namespace | trunc 253 | trimSuffix "-" -}}
{{- end -}}

{{/* The controller's ServiceAccount. */}}
{{- define "sluice.serviceAccountName" -}}
{{- default (include "sluice.controllerFullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* chart-version, as the helm.sh/chart label wants it. */}}
{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object of the chart. */}}
{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" . }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sluice
{{- end -}}

{{/* Labels of the controller's objects and Pods. */}}
{{- define "sluice.controllerLabels" -}}
{{ include "sluice.labels" . }}
app.kubernetes.io/component: controller
{{- end -}}

{{/* The controller Pods' selector (immutable in a Deployment: no version in it). */}}
{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{/* repository:tag of the image, the tag defaulting to the chart's appVersion. */}}
{{- define "sluice.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{/* The discovery service's URL for gateway Pods. */}}
{{- define "sluice.controllerUrl" -}}
{{- if .Values.controllerUrl -}}
{{- .Values.controllerUrl -}}
{{- else -}}
{{- printf "https://%s.%s:18000" (include "sluice.controllerFullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}
