{{/* Name of the chart's objects: the release name, with the chart name unless it holds it. */}}
{{- define "oxbow.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "oxbow.selectorLabels" -}}
app.kubernetes.io/name: oxbow-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The selector labels as key=value,key=value. */}}
{{- define "oxbow.selectorLabelString" -}}
{{- $parts := list -}}
{{- range $key, $value := include "oxbow.selectorLabels" . | fromYaml -}}
{{- $parts = append $parts (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $parts -}}
{{- end -}}

{{- define "oxbow.labels" -}}
{{ include "oxbow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: oxbow
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "oxbow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "oxbow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "oxbow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* ClusterRole that lets broker pods read nodes (broker.rack from a node label). */}}
{{- define "oxbow.brokerClusterRole" -}}
{{- printf "%s-broker" (include "oxbow.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "oxbow.brokerImage" -}}
{{- printf "%s:%s" .Values.brokerImage.repository (default .Chart.AppVersion .Values.brokerImage.tag) -}}
{{- end -}}

{{/* What the operator does in a watched namespace. */}}
{{- define "oxbow.rules" -}}
- apiGroups: ["oxbow.dev"]
  resources: ["kafkaclusters", "kafkatopics", "kafkausers", "kafkarebalances"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["oxbow.dev"]
  resources: ["kafkaclusters/status", "kafkatopics/status", "kafkausers/status", "kafkarebalances/status"]
  verbs: ["get", "patch"]
# Owner references with blockOwnerDeletion on the objects a KafkaCluster or KafkaUser owns.
- apiGroups: ["oxbow.dev"]
  resources: ["kafkaclusters/finalizers", "kafkausers/finalizers"]
  verbs: ["update"]
# KafkaUser: the Secret with each user's password or certificate (written, and deleted when the
# user stops authenticating), and the Secret a spec names to take the password from.
# KafkaCluster: the Secrets of its cluster and clients CAs and of its brokers' certificates,
# watched (the operator's own, by label) so that a renewal request or a deleted Secret is acted
# on at once. Only in the watched namespaces when watchNamespaces is set.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Deleting a StatefulSet (its pods orphaned, then adopted by the one made again) is how its
# claim templates grow with spec.storage.size.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Volume growth: the brokers' claims get the larger size; a claim whose filesystem grows
# offline gets its broker restarted.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Services: a removed broker's or listener's external Services are deleted.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Each cluster's NetworkPolicy.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The Ingresses of ingress listeners: a removed broker's or listener's are deleted.
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The brokers' own ServiceAccount, for clusters with spec.rack.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create", "patch"]
# Rolling restarts: the operator deletes one outdated broker pod at a time (OnDelete), watches
# broker pods for oxbow.dev/manual-rolling-update and puts that annotation on each pod when
# the KafkaCluster carries it.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
