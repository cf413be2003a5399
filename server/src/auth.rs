//! Passwords (argon2), bearer tokens (random, stored as SHA-256), and the
//! `AuthUser` extractor that every protected handler takes, so no handler
//! can forget to authenticate.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::relay::{RelayError, RelayStore, User};
use crate::AppState;

pub fn hash_password(password: &str) -> Result<String, RelayError> {
    if password.len() < 8 {
        return Err(RelayError::Invalid(
            "a password needs at least 8 characters".into(),
        ));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| RelayError::Invalid(format!("cannot hash password: {e}")))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A disabled user's stored hash starts with this (as a locked account's
/// does in /etc/shadow): nothing verifies against it, and taking it off
/// gives the same password back.
const DISABLED: char = '!';

pub fn is_disabled(password_hash: &str) -> bool {
    password_hash.starts_with(DISABLED)
}

/// The hash stored while a user is disabled (or enabled again).
pub fn with_disabled(password_hash: &str, disabled: bool) -> String {
    let bare = password_hash.trim_start_matches(DISABLED);
    if disabled {
        format!("{DISABLED}{bare}")
    } else {
        bare.to_string()
    }
}

/// A new random token (what the client keeps) and its hash (what we store).
pub fn new_token() -> (String, [u8; 32]) {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Checks a username and password; returns a fresh token.
pub fn login(
    store: &dyn RelayStore,
    username: &str,
    password: &str,
) -> Result<Option<(User, String)>, RelayError> {
    let hash = match store.user(username)? {
        Some((user, hash)) if !is_disabled(&hash) => Some((user, hash)),
        _ => None,
    };
    let Some((user, hash)) = hash else {
        // Spend the same time as a real check, so timing does not reveal
        // which names exist or are disabled.
        let _ = verify_password(password, dummy_hash());
        return Ok(None);
    };
    if !verify_password(password, &hash) {
        return Ok(None);
    }
    let (token, token_hash) = new_token();
    store.add_token(&user.id, &token_hash)?;
    Ok(Some((store.in_effect(user)?, token)))
}

fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("no such user here").unwrap_or_default())
}

/// The hash of a request's bearer token.
pub fn bearer_hash(headers: &axum::http::HeaderMap) -> Result<[u8; 32], ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
    let token = header
        .strip_prefix("Bearer ")
        .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <token>`"))?;
    Ok(token_hash(token.trim()))
}

/// The user a request's bearer token belongs to.
#[derive(Debug, Clone)]
pub struct AuthUser(pub User);

impl FromRequestParts<Arc<AppState>> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let hash = bearer_hash(&parts.headers)?;
        let user = state.store(move |relay| relay.signed_in(&hash)).await?;
        user.map(AuthUser)
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token; sign in again"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_tokens_hash() {
        let h = hash_password("correct horse").unwrap();
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(hash_password("short").is_err());
        let (token, hash) = new_token();
        assert_eq!(token_hash(&token), hash);
        assert!(!verify_password("x", dummy_hash()));
    }

    #[test]
    fn a_disabled_hash_verifies_nothing_and_enabling_gives_the_password_back() {
        let hash = hash_password("password1").unwrap();
        let off = with_disabled(&hash, true);
        assert!(is_disabled(&off) && !verify_password("password1", &off));
        assert_eq!(with_disabled(&off, true), off, "disabling twice is once");
        let on = with_disabled(&off, false);
        assert!(!is_disabled(&on) && verify_password("password1", &on));
    }
}
