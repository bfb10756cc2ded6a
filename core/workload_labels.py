"""The identity labels a workload carries besides its pod's own Kubernetes labels.

Shared by the runtime side that sets them (`runtime.cri`) and the policy side that selects on them: a
CRI-sourced workload's labels are the pod's labels verbatim plus these keys (and the intrinsic ones of
`runtime.identity` where they apply). The key of a pod's workload is its UID.
"""

POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
WORKLOAD_NAME = "enforcer.workload"  # the pod's owning workload name as NeuVector's `service` uses it (deployment/statefulset/daemonset/job name: pod name with the controller's hash suffixes removed; the pod name for a bare pod)
NODE = "enforcer.node"  # node name the workload runs on
IMAGES = "enforcer.images"  # comma-separated container images, sorted
