//! The spec's error object and well-known error codes.

use serde::{Deserialize, Serialize};

/// Error codes reserved by the CNI specification (section "Error").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnv = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    NotAvailable = 50,
    LimitedConnectivity = 51,
    /// Plugin-specific errors start at 100.
    Internal = 100,
}

/// A CNI error as a plugin prints it on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            cni_version: super::CURRENT.to_string(),
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn io(msg: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Io, msg).with_details(err.to_string())
    }

    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidConfig, msg)
    }

    pub fn internal(msg: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Internal, msg).with_details(err.to_string())
    }

    pub fn is(&self, code: ErrorCode) -> bool {
        self.code == code as u32
    }
}
