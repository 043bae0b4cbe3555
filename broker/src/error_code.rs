//! Kafka error codes as one type, so an API that answers with one cannot be handed a count, an
//! offset or any other `i16` by mistake.

use std::fmt;

use kafka_protocol::error::ResponseError;

/// A Kafka error code as it goes on the wire; [`ErrorCode::NONE`] is success.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ErrorCode(i16);

impl ErrorCode {
    /// No error.
    pub const NONE: ErrorCode = ErrorCode(0);

    /// A code read from the wire or from another component that speaks raw codes.
    pub const fn from_wire(code: i16) -> ErrorCode {
        ErrorCode(code)
    }

    /// The code to put on the wire.
    pub const fn code(self) -> i16 {
        self.0
    }

    /// Whether this is success.
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }

    /// Whether this is the error `e`.
    pub const fn is(self, e: ResponseError) -> bool {
        self.0 == e.code()
    }
}

impl From<ResponseError> for ErrorCode {
    fn from(e: ResponseError) -> ErrorCode {
        ErrorCode(e.code())
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match ResponseError::try_from_code(self.0) {
            None => f.write_str("NONE"),
            Some(e) => write!(f, "{e} ({})", self.0),
        }
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_print_their_names() {
        let c = ErrorCode::from(ResponseError::NotCoordinator);
        assert_eq!(c.code(), 16);
        assert!(c.is(ResponseError::NotCoordinator));
        assert!(!c.is_none());
        assert_eq!(c.to_string(), "NotCoordinator (16)");
        assert_eq!(ErrorCode::NONE.to_string(), "NONE");
        assert!(ErrorCode::from_wire(0).is_none());
        assert_eq!(
            ErrorCode::from_wire(-1).to_string(),
            "UnknownServerError (-1)"
        );
    }
}
