//! User administration, in one place for the CLI and the admin page:
//! adding users, their territories, disabling and enabling them, resetting
//! passwords, adding territories. Every action is written to the relay's
//! log under the `fieldcrm::audit` target, with who did it.

use crate::auth;
use crate::relay::{RelayError, RelayStore, Result, Role, User};

/// A user as the admin page lists them.
#[derive(Debug, Clone)]
pub struct Account {
    pub user: User,
    pub disabled: bool,
}

/// Who acts: an admin's name, or `cli` for the command line.
pub type By<'a> = &'a str;

fn audit(by: By, action: &str, user: &str, detail: &str) {
    tracing::info!(target: "fieldcrm::audit", by, action, user, detail, "user administration");
}

fn stored_hash(store: &dyn RelayStore, id: &str) -> Result<String> {
    match store.user(id)? {
        Some((_, hash)) => Ok(hash),
        None => Err(RelayError::NotFound(format!("no user {id:?}"))),
    }
}

pub fn accounts(store: &dyn RelayStore) -> Result<Vec<Account>> {
    Ok(store
        .list_users()?
        .into_iter()
        .map(|(user, hash)| Account {
            user,
            disabled: auth::is_disabled(&hash),
        })
        .collect())
}

pub fn add(
    store: &dyn RelayStore,
    by: By,
    id: &str,
    role: Role,
    territories: &[String],
    password: &str,
) -> Result<()> {
    store.add_user(id, &auth::hash_password(password)?, role, territories)?;
    audit(
        by,
        "add",
        id,
        &format!("{} in {}", role.as_str(), territories.join(",")),
    );
    Ok(())
}

pub fn set_territories(
    store: &dyn RelayStore,
    by: By,
    id: &str,
    territories: &[String],
) -> Result<()> {
    store.set_territories(id, territories)?;
    audit(by, "set territories", id, &territories.join(","));
    Ok(())
}

/// A disabled user cannot sign in, and every session and device of theirs
/// is signed out; their records keep them as owner. Enabling gives back
/// the password they had.
pub fn set_disabled(store: &dyn RelayStore, by: By, id: &str, disabled: bool) -> Result<()> {
    let hash = stored_hash(store, id)?;
    store.set_password_hash(id, &auth::with_disabled(&hash, disabled))?;
    if disabled {
        store.revoke_tokens(id)?;
    }
    audit(by, if disabled { "disable" } else { "enable" }, id, "");
    Ok(())
}

/// A new password; the user's sessions and devices must sign in again. A
/// disabled user stays disabled.
pub fn reset_password(store: &dyn RelayStore, by: By, id: &str, password: &str) -> Result<()> {
    let disabled = auth::is_disabled(&stored_hash(store, id)?);
    let hash = auth::with_disabled(&auth::hash_password(password)?, disabled);
    store.set_password_hash(id, &hash)?;
    let revoked = store.revoke_tokens(id)?;
    audit(
        by,
        "reset password",
        id,
        &format!("{revoked} session(s) signed out"),
    );
    Ok(())
}

pub fn add_territory(store: &dyn RelayStore, by: By, name: &str) -> Result<()> {
    store.add_territory(name)?;
    audit(by, "add territory", "", name);
    Ok(())
}

/// Puts territory `name` under `parent` (`None`: at the top). Users
/// assigned to a territory see every territory under it, so this changes
/// what their devices hold: at their next sync they evict what left their
/// view and fetch what entered it. Refused for unknown territories and for
/// a parent that is `name` or sits under it (territories form a tree).
pub fn set_territory_parent(
    store: &dyn RelayStore,
    by: By,
    name: &str,
    parent: Option<&str>,
) -> Result<()> {
    let tree = store.territory_parents()?;
    let exists = |t: &str| tree.iter().any(|(n, _)| n == t);
    if !exists(name) {
        return Err(RelayError::NotFound(format!("no territory {name:?}")));
    }
    if let Some(parent) = parent {
        if !exists(parent) {
            return Err(RelayError::NotFound(format!("no territory {parent:?}")));
        }
        let under_name = crate::relay::access::with_descendants(&[name.to_string()], &tree);
        if under_name.iter().any(|t| t == parent) {
            return Err(RelayError::Invalid(format!(
                "{name:?} cannot go under {parent:?}: {parent:?} is {name:?} or one of the territories under it"
            )));
        }
    }
    store.set_territory_parent(name, parent)?;
    audit(
        by,
        "move territory",
        "",
        &format!("{name} under {}", parent.unwrap_or("(top)")),
    );
    Ok(())
}
