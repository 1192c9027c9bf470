//! The one error type of the benchmark: a message naming what went wrong.

use std::fmt;

#[derive(Debug)]
pub struct Error(pub String);

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Builds an [`Error`] from a format string.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => {
        $crate::error::Error(format!($($arg)*))
    };
}

/// The calling thread's errno as an `io::Error`, for messages.
pub fn last_os_error() -> std::io::Error {
    std::io::Error::last_os_error()
}
