"""Runtime security: process and file activity of the node's workloads (DESIGN.md §1, issue 6)."""
