//! Errors with a field path, shared by the checker and the conversions.

/// A problem at a field path such as `after[2].value.datetime.month`. Public only inside
/// this private module: the sealed conversion trait names it, nothing outside can.
#[derive(Debug)]
pub struct FieldError {
    pub path: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(problem: impl Into<String>) -> Self {
        FieldError {
            path: String::new(),
            problem: problem.into(),
        }
    }

    /// The same problem, one level up: inside field (or index) `segment`.
    pub fn at(mut self, segment: &str) -> Self {
        self.path = if self.path.is_empty() {
            segment.to_string()
        } else if self.path.starts_with('[') {
            format!("{segment}{}", self.path)
        } else {
            format!("{segment}.{}", self.path)
        };
        self
    }
}
