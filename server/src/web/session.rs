//! Browser sessions and CSRF protection.
//!
//! Signing in issues an ordinary relay token and keeps it in an HttpOnly,
//! SameSite=Strict cookie, so a page's script can never read it and another
//! site's page never sends it. Every state-changing form also carries a
//! CSRF token derived from the session token (SHA-256 of a label and the
//! token), checked by the [`Post`] extractor, so no handler can forget it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::zone::{self, Zone};
use super::{blocking, layout, PageError};
use crate::auth;
use crate::login_throttle::ClientAddress;
use crate::preferences::{self, Preferences};
use crate::relay::User;
use crate::{AppState, SignIn};

const COOKIE: &str = "fieldcrm_session";
/// Largest form body the UI accepts (CSV imports travel as forms).
const MAX_FORM_BYTES: usize = 32 << 20;

/// The signed-in user of a browser request.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    /// Records in the user's view with conflicting values, shown in the
    /// navigation; counted only for requests that render a page (see
    /// [`renders_page`]), 0 for the rest.
    pub conflicts: usize,
    /// The user's own settings (time zone, saved filters).
    pub prefs: Preferences,
    /// Where times are shown and typed: the user's setting, else the
    /// browser's, else UTC.
    pub zone: Zone,
    token_hash: [u8; 32],
    /// Goes into every form; [`Post`] checks it.
    pub csrf: String,
}

fn csrf_for(token: &str) -> String {
    hex::encode(Sha256::digest(format!("fieldcrm-csrf\0{token}").as_bytes()))
}

/// Whether a request renders a page with the navigation: a GET that is not
/// a picker's lookup (one per keystroke) or a CSV download. Form posts
/// answer with a redirect, so counting for them would be wasted.
fn renders_page(parts: &Parts) -> bool {
    let path = parts.uri.path();
    parts.method == axum::http::Method::GET && path != "/lookup" && !path.ends_with(".csv")
}

fn cookie(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
        .map(str::to_string)
}

fn cookie_token(parts: &Parts) -> Option<String> {
    cookie(parts, COOKIE)
}

impl FromRequestParts<Arc<AppState>> for Session {
    /// Not signed in: go to the sign-in page, then come back.
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let to_login = || {
            let back = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let query = serde_urlencoded::to_string([("next", back)]).unwrap_or_default();
            Redirect::to(&format!("/login?{query}")).into_response()
        };
        let Some(token) = cookie_token(parts) else {
            return Err(to_login());
        };
        let token_hash = auth::token_hash(&token);
        let count_conflicts = renders_page(parts);
        let found = blocking(state, move |relay| {
            let Some(user) = relay.signed_in(&token_hash)? else {
                return Ok(None);
            };
            let prefs = preferences::load(relay, &user.id)?;
            if !count_conflicts {
                return Ok(Some((user, prefs, 0)));
            }
            let conflicts = crate::relay::office::list(
                relay,
                &user,
                fieldcrm_core::ListQuery {
                    only_conflicts: true,
                    limit: 1,
                    ..Default::default()
                },
            )?
            .total;
            Ok(Some((user, prefs, conflicts)))
        })
        .await
        .map_err(IntoResponse::into_response)?;
        match found {
            Some((user, prefs, conflicts)) => Ok(Session {
                zone: Zone::first_of([
                    prefs.time_zone.as_deref(),
                    cookie(parts, zone::BROWSER_COOKIE).as_deref(),
                ]),
                user,
                prefs,
                conflicts,
                token_hash,
                csrf: csrf_for(&token),
            }),
            None => Err(to_login()),
        }
    }
}

/// A form post from a signed-in user whose CSRF token checked out; `T` is
/// the form's other fields.
#[derive(Debug)]
pub struct Post<T>(pub Session, pub T);

#[derive(Deserialize)]
struct CsrfField {
    #[serde(rename = "_csrf", default)]
    csrf: String,
}

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for Post<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let body = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|e| PageError::bad_request(format!("unreadable form: {e}")).into_response())?;
        check_csrf(&session, &body).map_err(IntoResponse::into_response)?;
        let form = serde_urlencoded::from_bytes(&body)
            .map_err(|e| PageError::bad_request(format!("bad form: {e}")).into_response())?;
        Ok(Post(session, form))
    }
}

fn check_csrf(session: &Session, body: &Bytes) -> Result<(), PageError> {
    let sent: CsrfField = serde_urlencoded::from_bytes(body).unwrap_or(CsrfField {
        csrf: String::new(),
    });
    if sent.csrf != session.csrf {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "this form is stale or came from another site (CSRF check failed); reload the page and try again",
        ));
    }
    Ok(())
}

/// Checks a CSRF token sent outside a urlencoded form (multipart uploads).
pub(super) fn check_csrf_value(session: &Session, sent: &str) -> Result<(), PageError> {
    check_csrf(
        session,
        &Bytes::from(serde_urlencoded::to_string([("_csrf", sent)]).unwrap_or_default()),
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login_page(Query(q): Query<LoginQuery>) -> Markup {
    login_form(local_path(q.next.as_deref()), None)
}

fn login_form(next: &str, error: Option<&str>) -> Markup {
    layout::public(
        "Sign in",
        html! {
            form.login method="post" action="/login" {
                h1 { "FieldCRM" }
                @if let Some(error) = error {
                    p.error role="alert" { (error) }
                }
                label { "Username" input id="username" name="username" autocomplete="username" required autofocus; }
                label { "Password" input id="password" name="password" type="password" autocomplete="current-password" required; }
                input type="hidden" name="next" value=(next);
                button type="submit" { "Sign in" }
            }
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
}

/// Only paths on this site: never send a user elsewhere after sign-in.
/// Browsers drop tabs and newlines inside URLs and read `\\` as `/`, so
/// `/<TAB>/evil.example` would become `//evil.example`, another host: any
/// whitespace, control character or backslash sends the user to the
/// dashboard instead, and what is left is always a valid `Location`.
fn local_path(next: Option<&str>) -> &str {
    const HOME: &str = "/dashboard";
    let Some(path) = next else { return HOME };
    let plain = !path.contains(|c: char| c.is_whitespace() || c.is_control() || c == '\\');
    let local = path.starts_with('/') && !path.starts_with("//");
    if plain && local && axum::http::HeaderValue::from_str(path).is_ok() {
        path
    } else {
        HOME
    }
}

pub async fn login(
    State(state): State<Arc<AppState>>,
    client: ClientAddress,
    axum::Form(form): axum::Form<LoginForm>,
) -> Result<Response, PageError> {
    let next = local_path(form.next.as_deref()).to_string();
    let token = match state
        .sign_in(client, &form.username, &form.password)
        .await?
    {
        SignIn::Welcome(_user, token) => token,
        SignIn::Refused => {
            return Ok((
                StatusCode::UNAUTHORIZED,
                login_form(&next, Some("Wrong username or password.")),
            )
                .into_response())
        }
        SignIn::Wait(wait) => {
            let message = format!(
                "Too many failed sign-ins from this computer; try again in {}.",
                layout::wait_in_words(wait)
            );
            return Ok((
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, (wait.as_secs() + 1).to_string())],
                login_form(&next, Some(&message)),
            )
                .into_response());
        }
    };
    let secure = if state.options.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response())
}

/// Ends this browser's session only; the user's devices stay signed in.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    Post(session, _): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let hash = session.token_hash;
    blocking(&state, move |relay| relay.revoke_token(&hash)).await?;
    let expired = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(([(header::SET_COOKIE, expired)], Redirect::to("/login")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(local_path(Some("/deals?stage=won")), "/deals?stage=won");
        assert_eq!(local_path(Some("//evil.example")), "/dashboard");
        assert_eq!(local_path(Some("https://evil.example")), "/dashboard");
        assert_eq!(local_path(Some("/\\evil.example")), "/dashboard");
        assert_eq!(local_path(None), "/dashboard");
        for sneaky in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/x",
            "/ /x",
            "/a\u{7f}",
        ] {
            assert_eq!(local_path(Some(sneaky)), "/dashboard", "{sneaky:?}");
        }
    }

    #[test]
    fn csrf_tokens_differ_per_session() {
        assert_ne!(csrf_for("a"), csrf_for("b"));
        assert_eq!(csrf_for("a").len(), 64);
    }
}
