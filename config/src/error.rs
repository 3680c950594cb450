//! Configuration errors: each names the key path, and the line and column where it was found.

use std::fmt;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}{}: {message}", location(*.line, *.column))]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `operator.joined.on[1]`; empty for the document.
    pub path: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

fn location(line: usize, column: usize) -> String {
    if line == 0 { String::new() } else { format!(" (line {line}, column {column})") }
}

/// Every problem found in one file, in the order they appear in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// Where the configuration came from (a file path or `<string>`).
    pub source_name: String,
    /// The problems, sorted by position.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// The paths of all errors, handy in tests and scripts.
    pub fn paths(&self) -> Vec<&str> {
        self.errors.iter().map(|e| e.path.as_str()).collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "{}: {n} error{}", self.source_name, if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
