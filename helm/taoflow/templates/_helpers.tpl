{{/* Names and labels shared by every manifest. */}}
{{- define "taoflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "taoflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "taoflow.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "taoflow.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "taoflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "taoflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "taoflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "taoflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: flywheel
{{- end -}}

{{/* The gateway's pods: labels of their own, so the daemon's Service never selects them. */}}
{{- define "taoflow.gatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ include "taoflow.name" . }}-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "taoflow.gatewayLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "taoflow.gatewaySelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "taoflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "taoflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The admin token Secret: the one named in values, or <fullname>-admin created by the operator. */}}
{{- define "taoflow.adminSecret" -}}
{{- default (printf "%s-admin" (include "taoflow.fullname" .)) .Values.secrets.adminToken.existingSecret -}}
{{- end -}}

{{/* taoflow.yaml: the user's settings with what the chart decides (paths, listen address) on top. */}}
{{- define "taoflow.settings" -}}
{{- $settings := deepCopy .Values.settings -}}
{{- $chart := dict "storage" (dict "state_dir" "/var/lib/taoflow") "daemon" (dict "admin_host" "0.0.0.0" "admin_port" (int .Values.service.port)) "model" (dict "cache_dir" "/var/lib/taoflow/models") -}}
{{- $fleet := dict -}}
{{- if .Values.adapterVolume.enabled -}}
{{- $fleet = dict "stage_dir" .Values.adapterVolume.mountPath "adapter_root_on_servers" .Values.adapterVolume.pathOnServers -}}
{{- end -}}
{{- if .Values.gateway.enabled -}}
{{- $_ := set $fleet "routing" "gateway" -}}
{{- $daemonUrl := printf "http://%s:%d" (include "taoflow.fullname" .) (int .Values.service.port) -}}
{{- $_ := set $chart "gateway" (dict "host" "0.0.0.0" "port" (int .Values.gateway.port) "daemon_url" $daemonUrl "capture" (dict "spool_dir" "/var/spool/taoflow")) -}}
{{- end -}}
{{- if $fleet -}}
{{- $_ := set $chart "fleet" $fleet -}}
{{- end -}}
{{- toYaml (mergeOverwrite $settings $chart) -}}
{{- end -}}
