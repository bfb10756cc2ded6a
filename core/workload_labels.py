POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
WORKLOAD_NAME = "enforcer.workload"  # the pod's owning workload name as NeuVector's `service` uses it
NODE = "enforcer.node"  # node name the workload runs on
IMAGES = "enforcer.images"  # comma-separated container images, sorted
