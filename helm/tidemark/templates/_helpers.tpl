{{/* ---------------------------------------------------------------- names and labels */}}

{{- define "tidemark.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tidemark.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tidemark.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tidemark.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "tidemark.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tidemark.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one stage: (list $ "capture") */}}
{{- define "tidemark.stageLabels" -}}
{{ include "tidemark.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "tidemark.stageSelector" -}}
{{ include "tidemark.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "tidemark.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}

{{/* ---------------------------------------------------------------- TOML rendering */}}

{{/* A TOML key: bare when it can be, quoted otherwise. */}}
{{- define "tidemark.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{/* An inline TOML value: string, number, bool, array or inline table. JSON strings and numbers
     are valid TOML; null entries of tables are left out (tidemark's default applies). */}}
{{- define "tidemark.toml.value" -}}
{{- $v := . -}}
{{- if kindIs "map" $v -}}
{ {{- $first := true -}}
{{- range $k, $x := $v -}}
{{- if not (kindIs "invalid" $x) -}}
{{- if not $first }}, {{ end -}}{{- $first = false -}}
{{ include "tidemark.toml.key" $k }} = {{ include "tidemark.toml.value" $x }}
{{- end -}}
{{- end -}} }
{{- else if kindIs "slice" $v -}}
[{{- range $i, $x := $v -}}{{- if $i -}}, {{ end -}}{{ include "tidemark.toml.value" $x }}{{- end -}}]
{{- else if kindIs "string" $v -}}
{{ toJson $v }}
{{- else if kindIs "bool" $v -}}
{{ $v }}
{{- else if or (kindIs "float64" $v) (kindIs "int64" $v) (kindIs "int" $v) -}}
{{ toJson $v }}
{{- else -}}
{{ fail (printf "tidemark chart: cannot render %v (%s) as a TOML value" $v (kindOf $v)) }}
{{- end -}}
{{- end -}}

{{/* A TOML table: (list "header" $map), header like "[source]" or "[[mapping]]". Scalars and
     arrays first, then non-empty sub-tables as [header.key]. */}}
{{- define "tidemark.toml.table" -}}
{{- $header := index . 0 -}}
{{- $t := index . 1 -}}
{{- $path := trimSuffix "]" (trimSuffix "]" (trimPrefix "[" (trimPrefix "[" $header))) -}}
{{ $header }}
{{- range $k, $v := $t }}
{{- if not (or (kindIs "invalid" $v) (kindIs "map" $v)) }}
{{ include "tidemark.toml.key" $k }} = {{ include "tidemark.toml.value" $v }}
{{- end }}
{{- end }}
{{- range $k, $v := $t }}
{{- if and (kindIs "map" $v) $v }}

{{ include "tidemark.toml.table" (list (printf "[%s.%s]" $path (include "tidemark.toml.key" $k)) $v) }}
{{- end }}
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- the configuration */}}

{{/* `[transport]`: the ONE place that knows how the Kafka transport is spelled in tidemark's
     config (kafka/src/config.rs, KafkaConfig, plus kind = "kafka"). */}}
{{- define "tidemark.config.transport" -}}
{{- $t := omit .Values.config.transport "kind" -}}
{{- $body := include "tidemark.toml.table" (list "[transport]" $t) -}}
{{- $lines := splitList "\n" $body -}}
[transport]
kind = "kafka"
{{ rest $lines | join "\n" }}
{{- end -}}

{{/* `[metrics]`: the health/metrics endpoint. */}}
{{- define "tidemark.config.metrics" -}}
{{- if .Values.metrics.enabled -}}
[metrics]
listen = {{ printf "0.0.0.0:%d" (int .Values.metrics.port) | toJson }}
{{- end -}}
{{- end -}}

{{/* `[target]`: kind "sqlite" (path) or "scylla" (dead_letter_path and [target.scylla]). */}}
{{- define "tidemark.config.target" -}}
{{- $t := .Values.config.target -}}
{{- if eq $t.kind "sqlite" -}}
{{ include "tidemark.toml.table" (list "[target]" (dict "kind" "sqlite" "path" $t.path)) }}
{{- else if eq $t.kind "scylla" -}}
[target]
kind = "scylla"
{{- with $t.dead_letter_path }}
dead_letter_path = {{ toJson . }}
{{- end }}

{{ include "tidemark.toml.table" (list "[target.scylla]" $t.scylla) }}
{{- end -}}
{{- end -}}

{{/* The whole tidemark.toml; `backfillScope` (optional) replaces nothing: groups use --table. */}}
{{- define "tidemark.config" -}}
{{- include "tidemark.validate" . -}}
{{- $c := .Values.config -}}
# tidemark.toml rendered by the tidemark Helm chart {{ .Chart.Version }} for release {{ .Release.Name }}.
# Do not edit: change the chart values. Credentials come from the environment, never from here.

{{ include "tidemark.toml.table" (list "[source]" $c.source) }}

{{ include "tidemark.toml.table" (list "[capture]" $c.capture) }}

{{ include "tidemark.toml.table" (list "[backfill]" $c.backfill) }}

{{ include "tidemark.config.target" . }}

{{ include "tidemark.config.transport" . }}

{{ include "tidemark.toml.table" (list "[apply]" $c.apply) }}

{{ include "tidemark.toml.table" (list "[reconcile]" $c.reconcile) }}
{{- range $m := $c.mapping }}

{{ include "tidemark.toml.table" (list "[[mapping]]" $m) }}
{{- end }}
{{- with include "tidemark.config.metrics" . }}

{{ . }}
{{- end }}
{{ end -}}

{{/* ---------------------------------------------------------------- checks (fail early) */}}

{{/* The largest partition count of any changes topic. */}}
{{- define "tidemark.maxPartitions" -}}
{{- $max := int .Values.config.transport.partitions -}}
{{- range $table, $n := (.Values.config.transport.table_partitions | default dict) -}}
{{- if gt (int $n) $max }}{{ $max = int $n }}{{ end -}}
{{- end -}}
{{- $max -}}
{{- end -}}

{{- define "tidemark.validate" -}}
{{- $c := .Values.config -}}
{{- if not $c.source.url -}}
{{- fail "config.source.url: set the source as mysql://USER@HOST:PORT (the password comes from secrets.source)" -}}
{{- end -}}
{{- if regexMatch "^[a-z]+://[^/@]*:[^/@]*@" $c.source.url -}}
{{- fail "config.source.url: holds a password; remove it from the URL and name an existing Secret in secrets.source (passed as env TIDEMARK_SOURCE_PASSWORD): secrets are never rendered into the ConfigMap" -}}
{{- end -}}
{{- if not $c.transport.brokers -}}
{{- fail "config.transport.brokers: list the Kafka bootstrap brokers (\"host:port\"); the stages talk through Kafka" -}}
{{- end -}}
{{- if lt (int $c.transport.partitions) 1 -}}
{{- fail "config.transport.partitions: must be at least 1" -}}
{{- end -}}
{{- range $section := list "producer" "consumer" -}}
{{- range $k, $v := (get $c.transport $section | default dict) -}}
{{- if regexMatch "(?i)(password|secret|sasl\\.username|\\.pem$|ssl\\.key\\.|keystore|token)" $k -}}
{{- fail (printf "config.transport.%s.%q: carries a credential; secrets are never rendered into the ConfigMap (pass it from a Secret through extraEnv once tidemark reads it from the environment)" $section $k) -}}
{{- end -}}
{{- if not (kindIs "string" $v) -}}
{{- fail (printf "config.transport.%s.%q: librdkafka settings are strings; quote the value" $section $k) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not (has $c.target.kind (list "sqlite" "scylla")) -}}
{{- fail (printf "config.target.kind: %q is not a target tidemark can write; use \"sqlite\" or \"scylla\"" (toString $c.target.kind)) -}}
{{- end -}}
{{- if eq $c.target.kind "scylla" -}}
{{- if not $c.target.scylla -}}
{{- fail "config.target.scylla: kind \"scylla\" needs nodes and keyspace" -}}
{{- end -}}
{{- if or (hasKey $c.target.scylla "user") (hasKey $c.target.scylla "username") (hasKey $c.target.scylla "password") -}}
{{- fail "config.target.scylla: credentials are not configured here; name an existing Secret in secrets.scylla" -}}
{{- end -}}
{{- end -}}
{{- if eq $c.target.kind "sqlite" -}}
{{- if not $c.target.path -}}
{{- fail "config.target.path: kind \"sqlite\" needs an absolute database file path" -}}
{{- end -}}
{{- if not (isAbs $c.target.path) -}}
{{- fail "config.target.path: must be absolute (the config file's folder is a read-only ConfigMap)" -}}
{{- end -}}
{{- if and .Values.apply.enabled (gt (int .Values.apply.replicas) 1) -}}
{{- fail (printf "apply.replicas: %d replicas cannot share the sqlite target (one writer); use 1, or target kind \"scylla\"" (int .Values.apply.replicas)) -}}
{{- end -}}
{{- end -}}
{{- $partitions := include "tidemark.maxPartitions" . | int -}}
{{- if and .Values.apply.enabled (gt (int .Values.apply.replicas) $partitions) -}}
{{- fail (printf "apply.replicas (%d) is more than the partitions of the changes topics (%d, from config.transport.partitions and table_partitions): the extra apply pods would get no partition. Lower apply.replicas or raise config.transport.partitions (topics init grows them on upgrade)" (int .Values.apply.replicas) $partitions) -}}
{{- end -}}
{{- if and .Values.apply.enabled (lt (int .Values.apply.replicas) 1) -}}
{{- fail "apply.replicas: must be at least 1 (or set apply.enabled=false)" -}}
{{- end -}}
{{- $names := dict -}}
{{- range $g := .Values.backfill.groups -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,18}[a-z0-9])?$" (toString $g.name)) -}}
{{- fail (printf "backfill.groups: name %q must be a DNS label of at most 20 characters (lower-case letters, digits, -)" (toString $g.name)) -}}
{{- end -}}
{{- if hasKey $names $g.name -}}
{{- fail (printf "backfill.groups: the name %q is used twice" $g.name) -}}
{{- end -}}
{{- $_ := set $names $g.name true -}}
{{- if not $g.tables -}}
{{- fail (printf "backfill.groups[%s].tables: list the tables (db.table) of the group" $g.name) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.reconcile.enabled (not .Values.reconcile.schedule) -}}
{{- fail "reconcile.schedule: set a cron schedule or reconcile.enabled=false" -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------- pod pieces */}}

{{/* Environment of every tidemark container: log level and credentials from Secrets. */}}
{{- define "tidemark.env" -}}
- name: TIDEMARK_LOG
  value: {{ .Values.logLevel | quote }}
{{- with .Values.secrets.source.name }}
- name: TIDEMARK_SOURCE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.secrets.source.passwordKey }}
{{- end }}
{{- if and (eq .Values.config.target.kind "scylla") .Values.secrets.scylla.name }}
- name: TIDEMARK_SCYLLA_USER
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.scylla.name }}
      key: {{ .Values.secrets.scylla.userKey }}
- name: TIDEMARK_SCYLLA_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.scylla.name }}
      key: {{ .Values.secrets.scylla.passwordKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tidemark.sqliteMounted" -}}
{{- if eq .Values.config.target.kind "sqlite" }}true{{ end -}}
{{- end -}}

{{/* Container pieces shared by every stage: (list $ "stage" $stageValues). */}}
{{- define "tidemark.container.common" -}}
{{- $ := index . 0 -}}
{{- $stage := index . 2 -}}
{{- $indexed := false -}}
{{- if gt (len .) 3 }}{{ $indexed = index . 3 }}{{ end -}}
image: {{ include "tidemark.image" $ }}
imagePullPolicy: {{ $.Values.image.pullPolicy }}
env:
{{- include "tidemark.env" $ | nindent 2 }}
{{- if $indexed }}
{{- /* An Indexed Job's pod: its completion index is the part it takes (`--part $(TIDEMARK_PART)/N`). */}}
  - name: TIDEMARK_PART
    valueFrom:
      fieldRef:
        fieldPath: metadata.annotations['batch.kubernetes.io/job-completion-index']
{{- end }}
{{- with $.Values.extraEnvFrom }}
envFrom:
{{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
{{- toYaml $.Values.securityContext | nindent 2 }}
resources:
{{- toYaml ($stage.resources | default dict) | nindent 2 }}
{{- end -}}

{{- define "tidemark.volumeMounts" -}}
{{- $ := index . 0 -}}
{{- $withTarget := index . 1 -}}
- name: config
  mountPath: /etc/tidemark
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if and $withTarget (include "tidemark.sqliteMounted" $) }}
- name: target
  mountPath: {{ dir $.Values.config.target.path }}
{{- end }}
{{- end -}}

{{- define "tidemark.volumes" -}}
{{- $ := index . 0 -}}
{{- $withTarget := index . 1 -}}
{{- $configMap := index . 2 -}}
- name: config
  configMap:
    name: {{ $configMap }}
- name: tmp
  emptyDir:
    sizeLimit: {{ $.Values.tmpSizeLimit }}
{{- if and $withTarget (include "tidemark.sqliteMounted" $) }}
- name: target
{{- if $.Values.sqlite.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ $.Values.sqlite.persistence.existingClaim | default (printf "%s-target" (include "tidemark.fullname" $)) }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every stage. */}}
{{- define "tidemark.podSpec.common" -}}
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
{{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "tidemark.podAnnotations" -}}
checksum/config: {{ include "tidemark.config" . | sha256sum }}
{{- if .Values.metrics.enabled }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tidemark.metricsPort" -}}
{{- if .Values.metrics.enabled }}
ports:
  - name: metrics
    containerPort: {{ .Values.metrics.port }}
    protocol: TCP
{{- end }}
{{- end -}}

{{/* Probes of a long-running stage (capture, apply, control). */}}
{{- define "tidemark.probes" -}}
{{- if .Values.metrics.enabled }}
startupProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 5
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 6
readinessProbe:
  httpGet: {path: /readyz, port: metrics}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
{{- end }}
{{- end -}}
