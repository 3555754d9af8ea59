//! Turning a policy into a jailed server process: cgroup → namespaces → landlock → caps → seccomp.
