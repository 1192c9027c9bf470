//! Command-line glue over the library.

pub mod image;
