//! `mcp-guard exec`: wires one server session together (policy → launch → kernel guard → stdio).
