//! `mcp-guard doctor`: probes what this host supports and what that means for enforcement.
