//! Lab 20: a repository over PostgreSQL with sqlx.
//!
//! Users (create, get, list a page at a time, update, delete) and accounts
//! with a money transfer, on a real PostgreSQL. The schema is yours to
//! write in `src/migrations/0001_users_and_accounts.sql`; `Repo::migrate`
//! runs it. The doc comments below are the contract (README.md has it in
//! full); the tests check it.
//!
//! - Bind every value (`$1` and `.bind(...)`): never format a value into
//!   the SQL text.
//! - Tell errors apart by their SQLSTATE and constraint
//!   (`sqlx::error::DatabaseError::kind`, `constraint`), never by message.
//! - Page with a cursor (`WHERE id > $1 ORDER BY id LIMIT $2`), not OFFSET.
//! - A transfer is one transaction; correctness must come from the
//!   database's locks, since several copies of this code may run at once.

#![allow(unused)]

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
        todo!()
    }

    /// The user with this id, or [`RepoError::NotFound`].
    pub async fn get_user(&self, id: i64) -> Result<User, RepoError> {
        todo!()
    }

    /// Up to `limit` users with an id greater than `after` (from the
    /// start when `None`), in id order. `limit` is 1 to [`MAX_PAGE`], else
    /// [`RepoError::Invalid`]. [`Page::next`] is the last id of the page
    /// when a user with a greater id existed, `None` otherwise. Walking the
    /// pages returns every user that exists throughout the walk exactly
    /// once, however many are inserted or deleted meanwhile.
    pub async fn list_users(&self, after: Option<i64>, limit: i64) -> Result<Page, RepoError> {
        todo!()
    }

    /// Changes the fields the patch names and returns the user as stored
    /// (an empty patch changes nothing). The rules of
    /// [`Repo::create_user`] apply to the new values; an unknown id is
    /// [`RepoError::NotFound`].
    pub async fn update_user(&self, id: i64, patch: UserPatch) -> Result<User, RepoError> {
        todo!()
    }

    /// Deletes the user; an unknown id is [`RepoError::NotFound`].
    pub async fn delete_user(&self, id: i64) -> Result<(), RepoError> {
        todo!()
    }

    /// Opens an account holding `balance` cents and returns its id; a
    /// negative balance is [`RepoError::Invalid`].
    pub async fn open_account(&self, balance: i64) -> Result<i64, RepoError> {
        todo!()
    }

    /// The account's balance, or [`RepoError::NotFound`].
    pub async fn balance(&self, account: i64) -> Result<i64, RepoError> {
        todo!()
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
        todo!()
    }
}
