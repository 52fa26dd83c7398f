//! A repository over PostgreSQL with sqlx: users (create, get, list,
//! update, delete) and accounts with a money transfer.
//!
//! # Design
//!
//! - **Queries at run time, parameters always bound.** Every statement is a
//!   `&'static str` with `$1`, `$2` placeholders and `.bind(...)` values, so
//!   a value is never SQL text: PostgreSQL parses the statement once (the
//!   extended protocol's Parse), and the values arrive separately (Bind). A
//!   name like `'); DROP TABLE users; --` is stored as those characters.
//!   The run-time API (`sqlx::query_as`) rather than the `query!` macros
//!   means building needs no database.
//! - **The schema holds the rules too** (`migrations/`): `CHECK`s and a
//!   unique index on `lower(email)`. The Rust checks give clear errors
//!   early; the database's make them true for every writer.
//! - **Errors by code, never by message.** A failed statement's SQLSTATE
//!   (`23505` unique violation, `23514` check violation) and constraint name
//!   become [`RepoError`] variants; message text changes with the server's
//!   version and language.
//! - **Keyset paging.** A page is `WHERE id > $after ORDER BY id LIMIT n`:
//!   the cursor is the last id seen, so rows inserted or deleted elsewhere
//!   never shift a page (as `OFFSET` would), and the index on `id` finds
//!   the start directly instead of counting past skipped rows.
//! - **A transfer is one transaction holding both row locks.** It locks the
//!   two accounts with `SELECT ... FOR UPDATE`, in id order, so a concurrent
//!   transfer touching either waits, and two opposite transfers cannot
//!   deadlock; then it checks and writes, and commits. Dropping the
//!   transaction on any error rolls everything back.

use sqlx::PgPool;
use sqlx::error::ErrorKind;

/// The most rows [`Repo::list_users`] returns in one page.
pub const MAX_PAGE: i64 = 100;

/// The longest name, in characters (not bytes).
pub const MAX_NAME_CHARS: usize = 100;

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub email: String,
}

/// What [`Repo::update_user`] changes: `None` keeps the field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPatch {
    pub name: Option<String>,
    pub email: Option<String>,
}

/// One page of users, in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub users: Vec<User>,
    /// The cursor for the next page (the last id of this one), or `None`
    /// when no user came after this page when it was read.
    pub next: Option<i64>,
}

/// Everything that can go wrong, as the caller needs to tell it apart.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// No user or account with that id.
    #[error("not found")]
    NotFound,
    /// Another user has this email (compared ignoring case).
    #[error("a user with this email already exists")]
    DuplicateEmail,
    /// The input breaks a documented rule (empty or too long name, email
    /// without `@`, page size, amount, a balance that would overflow).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The source account holds less than the amount.
    #[error("insufficient funds")]
    InsufficientFunds,
    /// Anything else the database or the connection reported.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The repository: a handle on a connection pool; cheap to clone.
#[derive(Debug, Clone)]
pub struct Repo {
    pool: PgPool,
}

/// Maps a database error to the domain error it means, by SQLSTATE and
/// constraint name.
fn classify(e: sqlx::Error) -> RepoError {
    if let sqlx::Error::Database(db) = &e {
        match db.kind() {
            ErrorKind::UniqueViolation if db.constraint() == Some("users_email_key") => {
                return RepoError::DuplicateEmail;
            }
            ErrorKind::CheckViolation => {
                return RepoError::Invalid(format!(
                    "rejected by the constraint {}",
                    db.constraint().unwrap_or("?")
                ));
            }
            _ => {}
        }
    }
    RepoError::Db(e)
}

fn check_name(name: &str) -> Result<(), RepoError> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(RepoError::Invalid(format!(
            "a name has 1 to {MAX_NAME_CHARS} characters, this one {chars}"
        )));
    }
    Ok(())
}

fn check_email(email: &str) -> Result<(), RepoError> {
    if !email.contains('@') {
        return Err(RepoError::Invalid(format!("{email:?} has no @")));
    }
    Ok(())
}

impl Repo {
    /// A repository on `pool`; run [`Repo::migrate`] once before use.
    pub fn new(pool: PgPool) -> Repo {
        Repo { pool }
    }

    /// Creates or updates the schema (the files in `src/migrations/`,
    /// embedded at compile time); running it again does nothing.
    pub async fn migrate(&self) -> Result<(), RepoError> {
        sqlx::migrate!("src/migrations").run(&self.pool).await?;
        Ok(())
    }

    /// Stores a new user and returns it with its id (handed out by the
    /// database, increasing). `name` has 1 to [`MAX_NAME_CHARS`] characters
    /// and `email` contains `@`, else [`RepoError::Invalid`]; an email
    /// another user has, in any case, is [`RepoError::DuplicateEmail`].
    /// Both are stored exactly as given, whatever characters they hold.
    pub async fn create_user(&self, name: &str, email: &str) -> Result<User, RepoError> {
        check_name(name)?;
        check_email(email)?;
        sqlx::query_as("INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id, name, email")
            .bind(name)
            .bind(email)
            .fetch_one(&self.pool)
            .await
            .map_err(classify)
    }

    /// The user with this id, or [`RepoError::NotFound`].
    pub async fn get_user(&self, id: i64) -> Result<User, RepoError> {
        sqlx::query_as("SELECT id, name, email FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?
            .ok_or(RepoError::NotFound)
    }

    /// Up to `limit` users with an id greater than `after` (from the
    /// start when `None`), in id order. `limit` is 1 to [`MAX_PAGE`], else
    /// [`RepoError::Invalid`]. [`Page::next`] is the last id of the page
    /// when a user with a greater id existed, `None` otherwise. Walking the
    /// pages returns every user that exists throughout the walk exactly
    /// once, however many are inserted or deleted meanwhile.
    pub async fn list_users(&self, after: Option<i64>, limit: i64) -> Result<Page, RepoError> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(RepoError::Invalid(format!(
                "a page holds 1 to {MAX_PAGE} users, not {limit}"
            )));
        }
        // One row more than asked tells whether a next page exists, in the
        // same snapshot, without a second query.
        let mut users: Vec<User> =
            sqlx::query_as("SELECT id, name, email FROM users WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after.unwrap_or(i64::MIN))
                .bind(limit + 1)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
        let more = users.len() as i64 > limit;
        users.truncate(limit as usize);
        let next = if more {
            users.last().map(|u| u.id)
        } else {
            None
        };
        Ok(Page { users, next })
    }

    /// Changes the fields the patch names and returns the user as stored
    /// (an empty patch changes nothing). The rules of
    /// [`Repo::create_user`] apply to the new values; an unknown id is
    /// [`RepoError::NotFound`].
    pub async fn update_user(&self, id: i64, patch: UserPatch) -> Result<User, RepoError> {
        if let Some(name) = &patch.name {
            check_name(name)?;
        }
        if let Some(email) = &patch.email {
            check_email(email)?;
        }
        // COALESCE keeps a column when its parameter is NULL: one
        // statement for every combination of fields.
        sqlx::query_as(
            "UPDATE users SET name = COALESCE($2, name), email = COALESCE($3, email) \
             WHERE id = $1 RETURNING id, name, email",
        )
        .bind(id)
        .bind(patch.name)
        .bind(patch.email)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?
        .ok_or(RepoError::NotFound)
    }

    /// Deletes the user; an unknown id is [`RepoError::NotFound`].
    pub async fn delete_user(&self, id: i64) -> Result<(), RepoError> {
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        if done.rows_affected() == 0 {
            return Err(RepoError::NotFound);
        }
        Ok(())
    }

    /// Opens an account holding `balance` cents and returns its id; a
    /// negative balance is [`RepoError::Invalid`].
    pub async fn open_account(&self, balance: i64) -> Result<i64, RepoError> {
        if balance < 0 {
            return Err(RepoError::Invalid(format!(
                "an account cannot open at {balance}"
            )));
        }
        sqlx::query_scalar("INSERT INTO accounts (balance) VALUES ($1) RETURNING id")
            .bind(balance)
            .fetch_one(&self.pool)
            .await
            .map_err(classify)
    }

    /// The account's balance, or [`RepoError::NotFound`].
    pub async fn balance(&self, account: i64) -> Result<i64, RepoError> {
        sqlx::query_scalar("SELECT balance FROM accounts WHERE id = $1")
            .bind(account)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?
            .ok_or(RepoError::NotFound)
    }

    /// Moves `amount` cents from one account to another, all or nothing.
    ///
    /// Errors, with no money moved: an amount of 0 or less, or `from ==
    /// to`, is [`RepoError::Invalid`]; an unknown account is
    /// [`RepoError::NotFound`]; less than `amount` on `from` is
    /// [`RepoError::InsufficientFunds`] (exactly `amount` is enough); a
    /// credit that would not fit in an `i64` is [`RepoError::Invalid`].
    ///
    /// Any number of transfers may run at the same time, from this process
    /// and from others on the same database: none is lost, no balance goes
    /// below zero, and transfers in opposite directions never deadlock.
    pub async fn transfer(&self, from: i64, to: i64, amount: i64) -> Result<(), RepoError> {
        if amount <= 0 {
            return Err(RepoError::Invalid(format!(
                "an amount is positive, not {amount}"
            )));
        }
        if from == to {
            return Err(RepoError::Invalid("a transfer needs two accounts".into()));
        }
        let mut tx = self.pool.begin().await?;
        // Both rows locked, in id order: whoever comes second waits here
        // until this transaction ends, and then reads the new balances. Two
        // transfers in opposite directions lock in the same order, so they
        // queue instead of deadlocking.
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, balance FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind([from, to].as_slice())
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        let balance_of = |id: i64| rows.iter().find(|r| r.0 == id).map(|r| r.1);
        let (Some(source), Some(target)) = (balance_of(from), balance_of(to)) else {
            return Err(RepoError::NotFound);
        };
        if source < amount {
            return Err(RepoError::InsufficientFunds);
        }
        // The amount is the caller's: adding it may not fit in a BIGINT.
        let Some(credited) = target.checked_add(amount) else {
            return Err(RepoError::Invalid(format!(
                "crediting {amount} would overflow the balance of account {to}"
            )));
        };
        sqlx::query("UPDATE accounts SET balance = $2 WHERE id = $1")
            .bind(from)
            .bind(source - amount)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        sqlx::query("UPDATE accounts SET balance = $2 WHERE id = $1")
            .bind(to)
            .bind(credited)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await?;
        Ok(())
    }
}
