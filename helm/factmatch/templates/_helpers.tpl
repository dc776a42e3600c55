{{- define "factmatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "factmatch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A component's name: (list . "worker") or (list . "trainer" 52). The suffix is kept whole and
     the release part truncated, so the name never exceeds the limit (63; a CronJob's is 52, since
     its Jobs append 11 characters). */}}
{{- define "factmatch.component" -}}
{{- $root := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- $max := 63 -}}
{{- if gt (len .) 2 }}{{ $max = index . 2 }}{{ end -}}
{{- $base := include "factmatch.fullname" $root | trunc (int (sub $max (add1 (len $suffix)))) | trimSuffix "-" -}}
{{- printf "%s-%s" $base $suffix -}}
{{- end -}}

{{/* Combinations that render fine but break pods: refuse them at install time, naming the value. */}}
{{- define "factmatch.checks" -}}
{{- if not .Values.secrets.databaseUrl.existingSecret -}}
{{- fail "secrets.databaseUrl.existingSecret: name the Secret that holds the workers' postgresql:// URL (create it first)" -}}
{{- end -}}
{{- if and (not .Values.modelStore.existingClaim) (not .Values.modelStore.storageClassName) -}}
{{- fail "modelStore: set modelStore.existingClaim, or modelStore.storageClassName to a ReadWriteMany class (EBS, PD and local-path cannot share a volume between the trainer and the workers)" -}}
{{- end -}}
{{- if eq (toString .Values.config.metrics_enabled) "false" -}}
{{- fail "config.metrics_enabled: the probes need /healthz, /readyz and /startupz; keep it true" -}}
{{- end -}}
{{- if and (hasPrefix "SASL" (toString .Values.config.kafka_security_protocol)) (not .Values.secrets.kafkaSasl.existingSecret) -}}
{{- fail "secrets.kafkaSasl.existingSecret: a SASL kafka_security_protocol needs the Secret with the username and password" -}}
{{- end -}}
{{- if and .Values.autoscaling.keda.enabled .Values.autoscaling.hpa.enabled -}}
{{- fail "enable autoscaling.keda or autoscaling.hpa, not both" -}}
{{- end -}}
{{- end -}}

{{- define "factmatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "factmatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "factmatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "factmatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "factmatch.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "factmatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "factmatch.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "factmatch.pvcName" -}}
{{- default (include "factmatch.component" (list . "models")) .Values.modelStore.existingClaim -}}
{{- end -}}

{{- define "factmatch.metricsPort" -}}
{{- default 9400 .Values.config.metrics_port -}}
{{- end -}}

{{/* Secrets as env vars, from Secrets the user already has; never in the ConfigMap.
     Called with (list . "worker") or (list . "admin"): migrations and the trainer use
     secrets.adminDatabaseUrl when set (a login of the schema owner or factmatch_trainer),
     workers secrets.databaseUrl (a login in factmatch_worker). */}}
{{- define "factmatch.secretEnv" -}}
{{- $root := index . 0 -}}
{{- $db := $root.Values.secrets.databaseUrl -}}
{{- if and (eq (index . 1) "admin") $root.Values.secrets.adminDatabaseUrl.existingSecret -}}
{{- $db = $root.Values.secrets.adminDatabaseUrl -}}
{{- end -}}
{{- with $root }}
- name: FACTMATCH_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "secrets.databaseUrl.existingSecret is required" $db.existingSecret }}
      key: {{ $db.key }}
{{- if .Values.secrets.kafkaSasl.existingSecret }}
- name: FACTMATCH_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.kafkaSasl.existingSecret }}
      key: {{ .Values.secrets.kafkaSasl.usernameKey }}
- name: FACTMATCH_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.kafkaSasl.existingSecret }}
      key: {{ .Values.secrets.kafkaSasl.passwordKey }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "factmatch.tlsEnv" -}}
{{- if .Values.secrets.kafkaTls.existingSecret }}
- name: FACTMATCH_KAFKA_SSL_CAFILE
  value: /etc/factmatch/kafka-tls/{{ .Values.secrets.kafkaTls.caKey }}
{{- end }}
{{- end -}}

{{- define "factmatch.tlsVolumeMount" -}}
{{- if .Values.secrets.kafkaTls.existingSecret }}
- {name: kafka-tls, mountPath: /etc/factmatch/kafka-tls, readOnly: true}
{{- end }}
{{- end -}}

{{- define "factmatch.tlsVolume" -}}
{{- if .Values.secrets.kafkaTls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.secrets.kafkaTls.existingSecret }}
{{- end }}
{{- end -}}

{{/* Called with (list . "worker") or (list . "admin"), as factmatch.secretEnv. */}}
{{- define "factmatch.podEnv" -}}
{{- $root := index . 0 -}}
envFrom:
  - configMapRef:
      name: {{ include "factmatch.fullname" $root }}
env:
{{- include "factmatch.secretEnv" . }}
{{- include "factmatch.tlsEnv" $root }}
{{- with $root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod-level: the security context (empty on OpenShift, whose SCC assigns the UID), and the
     scheduling knobs every pod shares. */}}
{{- define "factmatch.securityContext" -}}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- end -}}

{{- define "factmatch.containerSecurityContext" -}}
{{- with .Values.containerSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "factmatch.podLabels" -}}
{{- with .Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "factmatch.extraVolumeMounts" -}}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "factmatch.extraVolumes" -}}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "factmatch.resources" -}}
{{- $res := deepCopy (.resources | default dict) -}}
{{- if and .gpu .gpu.enabled -}}
{{- $limits := $res.limits | default dict -}}
{{- $_ := set $limits (.gpu.resourceName | default "nvidia.com/gpu") (.gpu.count | default 1) -}}
{{- $_ := set $res "limits" $limits -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}
