"""Runtime security: process and file activity of the node's workloads (DESIGN.md §1, issue 6).

One process (`monitor.run_runtime_monitor`) with a module per job: the process monitor
(`process_monitor`), the exec guard over fanotify permission events (`exec_guard`), the file monitor
(`file_monitor`), the events they emit (`process_events`), /proc reads (`procfs`, `proc_connector`),
workload identity (`identity`), profiles (`profiles`) and detections (`detections`). docs/runtime.md
has the table.
"""
