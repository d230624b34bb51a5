//! Roles and tokens. Tokens are compared in constant time, so response
//! timing does not reveal how much of a guessed token was right.

use crate::error::ApiError;
use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

/// What a caller may do (the wire enum; ordered).
pub use crate::protocol::Role;

#[derive(Debug, Clone)]
pub struct Tokens {
    admin: Vec<u8>,
    checkout: Vec<u8>,
}

impl Tokens {
    pub fn new(admin: &str, checkout: &str) -> Self {
        Self {
            admin: admin.as_bytes().to_vec(),
            checkout: checkout.as_bytes().to_vec(),
        }
    }

    /// The role a presented token grants, or `None` for a wrong token.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let t = token.as_bytes();
        // Both comparisons always run: no early exit on the first match.
        let admin = bool::from(t.ct_eq(&self.admin));
        let checkout = bool::from(t.ct_eq(&self.checkout));
        if admin {
            Some(Role::Admin)
        } else if checkout {
            Some(Role::Checkout)
        } else {
            None
        }
    }

    /// The role of an HTTP request: no `Authorization` header is a viewer;
    /// a wrong or malformed one is refused.
    pub fn role_of_headers(&self, headers: &HeaderMap) -> Result<Role, ApiError> {
        match headers.get(axum::http::header::AUTHORIZATION) {
            None => Ok(Role::Viewer),
            Some(value) => {
                let value = value.to_str().map_err(|_| ApiError::unauthorized())?;
                // The scheme is case-insensitive (RFC 9110 11.1).
                let token = match value.split_once(' ') {
                    Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token,
                    _ => return Err(ApiError::unauthorized()),
                };
                self.role_of(token.trim())
                    .ok_or_else(ApiError::unauthorized)
            }
        }
    }
}

/// Refuses unless `have` is at least `need`: 401 for an anonymous caller,
/// 403 for a known one without the right.
pub fn require(have: Role, need: Role) -> Result<(), ApiError> {
    if have >= need {
        Ok(())
    } else if have == Role::Viewer {
        Err(ApiError::unauthorized())
    } else {
        Err(ApiError::forbidden("this token may not do that"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Code;

    #[test]
    fn tokens_map_to_roles() {
        let t = Tokens::new("adm", "chk");
        assert_eq!(t.role_of("adm"), Some(Role::Admin));
        assert_eq!(t.role_of("chk"), Some(Role::Checkout));
        assert_eq!(t.role_of("ch"), None);
        assert_eq!(t.role_of(""), None);
        let mut h = HeaderMap::new();
        assert_eq!(t.role_of_headers(&h), Ok(Role::Viewer));
        h.insert("authorization", "Bearer chk".parse().unwrap());
        assert_eq!(t.role_of_headers(&h), Ok(Role::Checkout));
        h.insert("authorization", "bearer chk".parse().unwrap());
        assert_eq!(t.role_of_headers(&h), Ok(Role::Checkout), "any case");
        h.insert("authorization", "BEARER  chk".parse().unwrap());
        assert_eq!(t.role_of_headers(&h), Ok(Role::Checkout));
        h.insert("authorization", "Basic chk".parse().unwrap());
        assert_eq!(t.role_of_headers(&h).unwrap_err().code, Code::Unauthorized);
        assert_eq!(
            require(Role::Checkout, Role::Admin).unwrap_err().code,
            Code::Forbidden
        );
        assert_eq!(
            require(Role::Viewer, Role::Checkout).unwrap_err().code,
            Code::Unauthorized
        );
    }
}
