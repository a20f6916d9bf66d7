{{/*
Helpers shared by every template. Values are read with `dig` over
.Values.AsMap so that a values file missing a whole section (an older
config, or `helm lint` without values) renders with the defaults below
instead of failing on a nil map; chart/values.yaml holds the same defaults.
*/}}

{{/* The chart label: name-version, as helm create writes it. */}}
{{- define "vnest.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The labels the StatefulSet selects its pod by and both Services select on.
They never change for a release (a StatefulSet's selector is immutable).
*/}}
{{- define "vnest.selectorLabels" -}}
app: vnest
release: {{ .Release.Name }}
{{- end -}}

{{/*
What the control plane's Services select (naming.control_plane_pod_selector): the
pod's selector labels and vnest.io keys, which a tenant's pod can never carry on
the host (the syncer rewrites a tenant's vnest.io labels to hashed keys), so no
tenant pod labelled app=vnest,release=NAME becomes an endpoint of the API.
*/}}
{{- define "vnest.controlPlaneSelector" -}}
{{ include "vnest.selectorLabels" . }}
vnest.io/cluster: {{ .Release.Name }}
vnest.io/component: control-plane
{{- end -}}

{{/*
Labels of every object of the chart. Call with (dict "ctx" $ "component" "rbac").
The component is one of naming.py's: rbac, service, control-plane, config.
*/}}
{{- define "vnest.labels" -}}
{{ include "vnest.selectorLabels" .ctx }}
vnest.io/cluster: {{ .ctx.Release.Name }}
vnest.io/component: {{ .component }}
helm.sh/chart: {{ include "vnest.chart" .ctx }}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The Kubernetes version of the control plane: the config's, else the chart's pin. */}}
{{- define "vnest.kubernetesVersion" -}}
{{- $version := dig "controlPlane" "distro" "k8s" "version" "" .Values.AsMap -}}
{{- $version | default (index .Chart.Annotations "vnest.io/kubernetes-version") -}}
{{- end -}}

{{/* The port the control plane serves the API on (the proxy port of vcluster.yaml). */}}
{{- define "vnest.apiPort" -}}
{{- dig "controlPlane" "proxy" "port" 8443 .Values.AsMap | int -}}
{{- end -}}

{{/*
An image reference from a vcluster.yaml image block. Call with
(dict "image" <map or nil> "registry" <default> "repository" <default> "tag" <default>).
A registry given as "" means no registry (the image is resolved as written);
an empty repository or tag falls back to the default.
*/}}
{{- define "vnest.image" -}}
{{- $image := .image | default dict -}}
{{- $registry := .registry -}}
{{- if hasKey $image "registry" -}}
{{- if not (kindIs "invalid" $image.registry) -}}
{{- $registry = $image.registry -}}
{{- end -}}
{{- end -}}
{{- $repository := $image.repository | default .repository -}}
{{- $tag := $image.tag | default .tag -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $registry) $repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The vnest image (syncer and the binary-copy init container). */}}
{{- define "vnest.vnestImage" -}}
{{- include "vnest.image" (dict "image" (dig "controlPlane" "statefulSet" "image" dict .Values.AsMap) "registry" "" "repository" "vnest" "tag" .Chart.AppVersion) -}}
{{- end -}}

{{/*
Whether the virtual cluster runs its own kube-scheduler: either
controlPlane.distro.k8s.scheduler.enabled or
controlPlane.advanced.virtualScheduler.enabled turns it on (as in vCluster).
Renders "true" or "".
*/}}
{{- define "vnest.schedulerEnabled" -}}
{{- if or (dig "controlPlane" "distro" "k8s" "scheduler" "enabled" false .Values.AsMap) (dig "controlPlane" "advanced" "virtualScheduler" "enabled" false .Values.AsMap) -}}
true
{{- end -}}
{{- end -}}

{{/* Whether data lives on a PersistentVolumeClaim (default) or an emptyDir. Renders "true" or "". */}}
{{- define "vnest.persistence" -}}
{{- $enabled := dig "controlPlane" "statefulSet" "persistence" "volumeClaim" "enabled" true .Values.AsMap -}}
{{- if or (kindIs "invalid" $enabled) $enabled -}}
true
{{- end -}}
{{- end -}}

{{/*
Extra labels or annotations from the config, as "key": "value" lines, leaving
out the keys in .own (the chart's own lines, which win: vnest finds its
objects by them, so a config cannot override them). Values are quoted, as
label and annotation values must be strings. Call with
(dict "own" <rendered own lines> "extra" <map or nil>).
*/}}
{{- define "vnest.extraPairs" -}}
{{- $own := .own | default "" | fromYaml | default dict -}}
{{- range $key, $value := .extra | default dict }}
{{- if not (hasKey $own $key) }}
{{ $key | quote }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end -}}
