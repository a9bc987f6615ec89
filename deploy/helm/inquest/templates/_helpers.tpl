{{/*
Names and labels.
*/}}
{{- define "inquest.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "inquest.fullname" -}}
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

{{- define "inquest.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; (dict "root" $ "c" $component) or (dict "root" $). */}}
{{- define "inquest.labels" -}}
helm.sh/chart: {{ include "inquest.chart" .root }}
{{ include "inquest.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: inquest
{{- end }}

{{/* What a role's Deployment, Service, PDB and policies select its pods by. */}}
{{- define "inquest.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inquest.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .c }}
app.kubernetes.io/component: {{ .component }}
{{- if .id }}
inquest.dev/server: {{ .id }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The roles this release runs, as a YAML list. Each: kind (agent | registry | server |
all), id (a server's), key (its section: agent, registry, all, or the server id), name
(of its objects), component (label), spiffePath (its SPIFFE ID's path).
*/}}
{{- define "inquest.components" -}}
{{- $full := include "inquest.fullname" . }}
{{- if eq .Values.mode "monolithic" }}
{{- if ne .Values.identity.mode "dev" }}
{{- fail "mode: monolithic runs every role in one process, which needs the development identities it makes itself: set identity.mode: dev" }}
{{- end }}
- kind: all
  key: all
  name: {{ $full }}
  component: all
  spiffePath: registry
{{- else if eq .Values.mode "microservices" }}
{{- if eq .Values.identity.mode "dev" }}
{{- fail "identity.mode: dev makes a CA per pod, so no role could verify another: use spire, istio or files in microservices mode" }}
{{- end }}
- kind: agent
  key: agent
  name: {{ $full }}-agent
  component: agent
  spiffePath: agent
- kind: registry
  key: registry
  name: {{ $full }}-registry
  component: registry
  spiffePath: registry
{{- range $id := keys .Values.servers | sortAlpha }}
{{- $s := index $.Values.servers $id }}
{{- if not (regexMatch "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$" $id) }}
{{- fail (printf "servers.%s: a server id must be a DNS label (lowercase letters, digits, '-')" $id) }}
{{- end }}
{{- if has $id (list "agent" "registry" "all" "config") }}
{{- fail (printf "servers.%s: this id would clash with the chart's own object names" $id) }}
{{- end }}
{{- if and $s $s.enabled }}
- kind: server
  id: {{ $id }}
  key: {{ $id }}
  name: {{ $full }}-{{ $id }}
  component: server
  spiffePath: server/{{ $id }}
{{- end }}
{{- end }}
{{- else }}
{{- fail (printf "mode must be microservices or monolithic, not %q" .Values.mode) }}
{{- end }}
{{- end }}

{{/* The values section of a component: (dict "root" $ "c" $component). */}}
{{- define "inquest.sectionYaml" -}}
{{- if eq .c.kind "server" }}
{{- /* A key the entry leaves out (or sets to null) comes from serverDefaults; one it
       sets, even to false or {}, stays. */}}
{{- $s := deepCopy (index .root.Values.servers .c.id) }}
{{- range $k, $d := .root.Values.serverDefaults }}
{{- if or (not (hasKey $s $k)) (kindIs "invalid" (index $s $k)) }}
{{- $_ := set $s $k (deepCopy $d) }}
{{- end }}
{{- end }}
{{- toYaml $s }}
{{- else }}
{{- toYaml (index .root.Values .c.key) }}
{{- end }}
{{- end }}

{{/* A server's port: its `port`, else 7410 (the framework's default for other domains). */}}
{{- define "inquest.serverPort" -}}
{{- $s := index .root.Values.servers .id }}
{{- int64 (default 7410 $s.port) }}
{{- end }}

{{/* The image of a component: a server's own `image` (map or "repo:tag") or the chart's. */}}
{{- define "inquest.image" -}}
{{- $img := .root.Values.image }}
{{- $repo := $img.repository }}
{{- $tag := default .root.Chart.AppVersion $img.tag }}
{{- $own := dict }}
{{- if eq .c.kind "server" }}
{{- $own = (index .root.Values.servers .c.id).image }}
{{- end }}
{{- if kindIs "string" $own }}
{{- $own }}
{{- else if and $own $own.repository }}
{{- printf "%s:%s" $own.repository (default $tag $own.tag) }}
{{- else }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
{{- end }}

{{- define "inquest.imagePullPolicy" -}}
{{- $policy := .root.Values.image.pullPolicy }}
{{- if eq .c.kind "server" }}
{{- $own := (index .root.Values.servers .c.id).image }}
{{- if and (kindIs "map" $own) $own.pullPolicy }}
{{- $policy = $own.pullPolicy }}
{{- end }}
{{- end }}
{{- $policy }}
{{- end }}

{{/* The command-line arguments of a component. */}}
{{- define "inquest.args" -}}
{{- $v := include "inquest.sectionYaml" . | fromYaml }}
{{- if $v.args }}
{{- toJson $v.args }}
{{- else if eq .c.kind "server" }}
{{- toJson (list "server" .c.id) }}
{{- else }}
{{- toJson (list .c.kind) }}
{{- end }}
{{- end }}

{{/* Whether the public listener speaks TLS: "https" or "http". */}}
{{- define "inquest.publicScheme" -}}
{{- if .Values.publicTls.existingSecret }}https{{ else }}http{{ end }}
{{- end }}

{{/* The registry's public URL (links in approval requests). */}}
{{- define "inquest.registryPublicUrl" -}}
{{- if .Values.registry.publicUrl }}
{{- .Values.registry.publicUrl | trimSuffix "/" }}
{{- else if eq .Values.mode "monolithic" }}
{{- printf "%s://%s.%s.svc:7400" (include "inquest.publicScheme" .) (include "inquest.fullname" .) .Release.Namespace }}
{{- else }}
{{- printf "%s://%s-registry.%s.svc:7400" (include "inquest.publicScheme" .) (include "inquest.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* The names a Service is reached by, for a server's Host allow list. */}}
{{- define "inquest.serviceHosts" -}}
{{- $ns := .root.Release.Namespace }}
{{- toJson (list .name (printf "%s.%s" .name $ns) (printf "%s.%s.svc" .name $ns) (printf "%s.%s.svc.%s" .name $ns .root.Values.clusterDomain)) }}
{{- end }}

{{/* The SPIFFE ID Istio gives a component's pods (its ServiceAccount's). */}}
{{- define "inquest.istioId" -}}
{{- printf "spiffe://%s/ns/%s/sa/%s" .root.Values.identity.trustDomain .root.Release.Namespace .c.name }}
{{- end }}

{{/* Where the MCP endpoint of server `c` is served, and so its metrics. */}}
{{- define "inquest.serverPath" -}}
{{- $s := index .root.Values.servers .c.id }}
{{- $url := "" }}
{{- if $s.config }}{{ $url = $s.config.public_url | default "" }}{{ end }}
{{- if $url }}
{{- $p := (urlParse $url).path | trimSuffix "/" }}
{{- default "/" $p }}
{{- else }}/mcp{{ end }}
{{- end }}

{{/*
The configuration of a component, as YAML: what the deployment decides (listeners,
data_dir, identity, the registry's URL, servers' listeners), then `config`, then the
section's own `config`, each overriding the one before.
*/}}
{{- define "inquest.configYaml" -}}
{{- $root := .root }}
{{- $c := .c }}
{{- $v := include "inquest.sectionYaml" . | fromYaml }}
{{- $full := include "inquest.fullname" $root }}
{{- $ns := $root.Release.Namespace }}
{{- $id := $root.Values.identity }}
{{- $svid := dict "source" "dev" }}
{{- if eq $id.mode "spire" }}
{{- $svid = dict "source" "workload_api" "socket" (printf "unix:///spiffe-workload-api/%s" $id.spire.socketName) }}
{{- else if eq $id.mode "istio" }}
{{- $svid = dict "source" "files" "cert_file" "/etc/istio-output-certs/cert-chain.pem" "key_file" "/etc/istio-output-certs/key.pem" "bundle_file" "/etc/istio-output-certs/root-cert.pem" }}
{{- else if eq $id.mode "files" }}
{{- $svid = dict "source" "files" "cert_file" "/var/run/secrets/inquest/svid/tls.crt" "key_file" "/var/run/secrets/inquest/svid/tls.key" "bundle_file" "/var/run/secrets/inquest/svid/ca.crt" }}
{{- else if ne $id.mode "dev" }}
{{- fail (printf "identity.mode must be spire, istio, files or dev, not %q" $id.mode) }}
{{- end }}
{{- $identity := dict "trust_domain" $id.trustDomain "svid" $svid }}
{{- if eq $root.Values.mode "microservices" }}
{{- $_ := set $identity "dev_login" false }}
{{- end }}
{{- if eq $id.mode "istio" }}
{{- /* Istio names workloads by ServiceAccount, not by role: admit each role's. */}}
{{- $peers := list }}
{{- range $other := include "inquest.components" $root | fromYamlArray }}
{{- $peers = append $peers (include "inquest.istioId" (dict "root" $root "c" $other)) }}
{{- end }}
{{- $_ := set $identity "extra_peers" $peers }}
{{- end }}
{{- $registry := dict "public_url" (include "inquest.registryPublicUrl" $root) }}
{{- if eq $root.Values.mode "microservices" }}
{{- $_ := set $registry "url" (printf "https://%s-registry.%s.svc:7401" $full $ns) }}
{{- end }}
{{- $cfg := dict "data_dir" "/var/lib/inquest" "identity" $identity "registry" $registry }}
{{- if has $c.kind (list "agent" "registry" "all") }}
{{- $_ := set $cfg "listen" "0.0.0.0:7400" }}
{{- if $root.Values.publicTls.existingSecret }}
{{- $_ := set $cfg "tls" (dict "cert_file" "/etc/inquest/tls/tls.crt" "key_file" "/etc/inquest/tls/tls.key") }}
{{- end }}
{{- end }}
{{- if eq $c.kind "registry" }}
{{- $_ := set $cfg "mesh_listen" "0.0.0.0:7401" }}
{{- end }}
{{- if eq $c.kind "all" }}
{{- /* The mesh stays inside the pod: the agent in it calls its own registry there. */}}
{{- $_ := set $cfg "mesh_listen" "127.0.0.1:7401" }}
{{- $hosts := list "localhost" "127.0.0.1" "::1" }}
{{- $hosts = concat $hosts (include "inquest.serviceHosts" (dict "root" $root "name" $full) | fromJsonArray) }}
{{- if $root.Values.registry.publicUrl }}
{{- $hosts = append $hosts (urlParse $root.Values.registry.publicUrl).hostname }}
{{- end }}
{{- $servers := dict }}
{{- range $sid := keys $root.Values.servers | sortAlpha }}
{{- $s := index $root.Values.servers $sid }}
{{- if $s }}
{{- $table := dict "enabled" (eq (toString $s.enabled) "true") "allowed_hosts" $hosts }}
{{- $_ := set $servers $sid (mustMergeOverwrite $table (deepCopy (default dict $s.config))) }}
{{- end }}
{{- end }}
{{- $_ := set $cfg "servers" $servers }}
{{- end }}
{{- if eq $c.kind "server" }}
{{- $s := index $root.Values.servers $c.id }}
{{- $port := include "inquest.serverPort" (dict "root" $root "id" $c.id) }}
{{- $svcHost := printf "%s.%s.svc" $c.name $ns }}
{{- $hosts := concat (list "localhost" "127.0.0.1" "::1") (include "inquest.serviceHosts" (dict "root" $root "name" $c.name) | fromJsonArray) }}
{{- $table := dict "enabled" true "listen" (printf "0.0.0.0:%s" $port) "public_url" (printf "https://%s:%s/mcp" $svcHost $port) "allowed_hosts" $hosts }}
{{- $_ := set $cfg "servers" (dict $c.id (mustMergeOverwrite $table (deepCopy (default dict $s.config)))) }}
{{- end }}
{{- $merged := mustMergeOverwrite $cfg (deepCopy (default dict $root.Values.config)) }}
{{- if ne $c.kind "server" }}
{{- $merged = mustMergeOverwrite $merged (deepCopy (default dict $v.config)) }}
{{- end }}
{{- toYaml $merged }}
{{- end }}

{{/* The inquest.toml of a component. */}}
{{- define "inquest.configToml" -}}
# inquest.toml for {{ .c.name }} ({{ .c.kind }}{{ if .c.id }} {{ .c.id }}{{ end }}), rendered by the Inquest Helm chart.
# Every key: deploy/inquest.example.toml. INQUEST_* environment variables override it.
{{- include "inquest.toml.table" (dict "prefix" "" "table" (include "inquest.configYaml" . | fromYaml)) }}
{{ end }}

{{/*
A small TOML writer (Helm's toToml writes every YAML number as a float, which Inquest's
integer settings and the domains' keys refuse). Keys in order; nulls are left out.
*/}}
{{- define "inquest.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "inquest.toml.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) }}
{{- $all := true }}
{{- range $e := . }}{{ if not (kindIs "map" $e) }}{{ $all = false }}{{ end }}{{ end }}
{{- if $all }}true{{ end }}
{{- end }}
{{- end }}

{{- define "inquest.toml.value" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "float32" .) }}{{ if eq (floor .) (float64 .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if or (kindIs "int" .) (kindIs "int64" .) (kindIs "int32" .) (kindIs "uint64" .) }}{{ . }}
{{- else if kindIs "slice" . }}[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "inquest.toml.value" $e }}{{ end }}]
{{- else if kindIs "map" . }}{ {{- range $i, $k := keys . | sortAlpha }}{{ if $i }},{{ end }} {{ include "inquest.toml.key" $k }} = {{ include "inquest.toml.value" (index $ $k) }}{{ end }} }
{{- else }}{{ fail (printf "cannot write %v (%s) in TOML" . (kindOf .)) }}
{{- end }}
{{- end }}

{{- define "inquest.toml.table" -}}
{{- $prefix := .prefix }}
{{- $t := .table }}
{{- range $k := keys $t | sortAlpha }}
{{- $v := index $t $k }}
{{- if not (or (kindIs "invalid" $v) (kindIs "map" $v) (include "inquest.toml.isTableArray" $v)) }}
{{ include "inquest.toml.key" $k }} = {{ include "inquest.toml.value" $v }}
{{- end }}
{{- end }}
{{- range $k := keys $t | sortAlpha }}
{{- $v := index $t $k }}
{{- $name := include "inquest.toml.key" $k }}
{{- if $prefix }}{{ $name = printf "%s.%s" $prefix $name }}{{ end }}
{{- if kindIs "map" $v }}
{{- /* A table that only holds tables needs no header of its own. */}}
{{- $plain := or (eq (len $v) 0) false }}
{{- range $e := values $v }}{{ if not (or (kindIs "invalid" $e) (kindIs "map" $e) (include "inquest.toml.isTableArray" $e)) }}{{ $plain = true }}{{ end }}{{ end }}
{{- if $plain }}

[{{ $name }}]
{{- end }}
{{- include "inquest.toml.table" (dict "prefix" $name "table" $v) }}
{{- else if include "inquest.toml.isTableArray" $v }}
{{- range $e := $v }}

[[{{ $name }}]]
{{- include "inquest.toml.table" (dict "prefix" $name "table" $e) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The container's environment: (dict "root" $ "c" $component). */}}
{{- define "inquest.env" -}}
{{- $root := .root }}
{{- $c := .c }}
{{- $v := include "inquest.sectionYaml" . | fromYaml }}
- name: INQUEST_CONFIG
  value: /etc/inquest/config/inquest.toml
{{- if and (eq $root.Values.mode "microservices") (has $c.kind (list "agent" "registry")) }}
- name: INQUEST_STORE__URL
  valueFrom:
    secretKeyRef:
      name: {{ required "store.existingSecret: the Secret holding the PostgreSQL URL" $root.Values.store.existingSecret }}
      key: {{ $root.Values.store.key }}
{{- end }}
{{- if has $c.kind (list "agent" "registry" "all") }}
{{- range $name := keys $root.Values.intake.env | sortAlpha }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ required "intake.existingSecret: the Secret holding the alert sources' credentials" $root.Values.intake.existingSecret }}
      key: {{ index $root.Values.intake.env $name }}
{{- end }}
{{- end }}
{{- with $root.Values.env }}
{{ toYaml . }}
{{- end }}
{{- with $v.env }}
{{ toYaml . }}
{{- end }}
{{- if eq $c.kind "all" }}
{{- range $sid := keys $root.Values.servers | sortAlpha }}
{{- $s := index $root.Values.servers $sid }}
{{- if and $s $s.enabled $s.env }}
{{ toYaml $s.env }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The container ports: (dict "root" $ "c" $component). */}}
{{- define "inquest.ports" -}}
{{- if eq .c.kind "server" }}
- name: mcp
  containerPort: {{ include "inquest.serverPort" (dict "root" .root "id" .c.id) }}
  protocol: TCP
{{- else }}
- name: http
  containerPort: 7400
  protocol: TCP
{{- if eq .c.kind "registry" }}
- name: mesh
  containerPort: 7401
  protocol: TCP
{{- end }}
{{- end }}
{{- end }}

{{/* An HTTP probe on the port that serves /healthz and /readyz. */}}
{{- define "inquest.probe" -}}
httpGet:
  path: {{ .path }}
{{- if eq .c.kind "server" }}
  port: mcp
  scheme: HTTPS
{{- else }}
  port: http
  scheme: {{ include "inquest.publicScheme" .root | upper }}
{{- end }}
{{- end }}

{{/* Volumes of the pod: configuration, data, identity, TLS. */}}
{{- define "inquest.volumes" -}}
{{- $root := .root }}
{{- $c := .c }}
{{- $v := include "inquest.sectionYaml" . | fromYaml }}
- name: config
  configMap:
    name: {{ $c.name }}-config
- name: data
{{- if eq $c.kind "all" }}
{{- if $v.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-data" $c.name) $v.persistence.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- else }}
  emptyDir: {}
{{- end }}
- name: tmp
  emptyDir: {}
{{- if and $root.Values.publicTls.existingSecret (ne $c.kind "server") }}
- name: public-tls
  secret:
    secretName: {{ $root.Values.publicTls.existingSecret }}
{{- end }}
{{- $mode := $root.Values.identity.mode }}
{{- if eq $mode "spire" }}
- name: spiffe-workload-api
  csi:
    driver: csi.spiffe.io
    readOnly: true
{{- else if eq $mode "istio" }}
- name: istio-certs
  emptyDir:
    medium: Memory
{{- else if eq $mode "files" }}
- name: svid
  secret:
    secretName: {{ include "inquest.svidSecret" . }}
{{- end }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "inquest.volumeMounts" -}}
{{- $root := .root }}
{{- $c := .c }}
{{- $v := include "inquest.sectionYaml" . | fromYaml }}
- name: config
  mountPath: /etc/inquest/config
  readOnly: true
- name: data
  mountPath: /var/lib/inquest
- name: tmp
  mountPath: /tmp
{{- if and $root.Values.publicTls.existingSecret (ne $c.kind "server") }}
- name: public-tls
  mountPath: /etc/inquest/tls
  readOnly: true
{{- end }}
{{- $mode := $root.Values.identity.mode }}
{{- if eq $mode "spire" }}
- name: spiffe-workload-api
  mountPath: /spiffe-workload-api
  readOnly: true
{{- else if eq $mode "istio" }}
- name: istio-certs
  mountPath: /etc/istio-output-certs
  readOnly: true
{{- else if eq $mode "files" }}
- name: svid
  mountPath: /var/run/secrets/inquest/svid
  readOnly: true
{{- end }}
{{- with $v.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The Secret with a component's SVID (identity.mode: files). */}}
{{- define "inquest.svidSecret" -}}
{{- default (printf "%s-svid" .c.name) (index .root.Values.identity.files.secrets .c.key) }}
{{- end }}

{{/* The pod template's annotations (configuration checksum, Istio's certificate output). */}}
{{- define "inquest.podAnnotations" -}}
{{- $v := include "inquest.sectionYaml" . | fromYaml }}
checksum/config: {{ include "inquest.configToml" . | sha256sum }}
{{- if eq .root.Values.identity.mode "istio" }}
proxy.istio.io/config: |
  proxyMetadata:
    OUTPUT_CERTS: /etc/istio-output-certs
sidecar.istio.io/userVolumeMount: '{"istio-certs": {"mountPath": "/etc/istio-output-certs"}}'
{{- if not .root.Values.identity.istio.interceptTraffic }}
traffic.sidecar.istio.io/includeInboundPorts: ""
traffic.sidecar.istio.io/includeOutboundIPRanges: ""
{{- end }}
{{- end }}
{{- with $v.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}
