//! Resource usage.
