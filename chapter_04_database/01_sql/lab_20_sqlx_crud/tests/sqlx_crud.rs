//! The grader for lab 20, a repository over PostgreSQL with sqlx.
//!
//! Every test gets its own empty database on a real PostgreSQL
//! (`labkit::services::postgres`: `DATABASE_URL` if set, else a throwaway
//! server), runs `Repo::migrate`, and drives the repository only through
//! its public API. Every call has a deadline ([`CALL`]), so a transfer that
//! deadlocks or waits for a connection that never comes fails in seconds.
//!
//! The concurrency tests make the race certain instead of hoping for it:
//! the test itself locks the accounts' rows (`SELECT ... FOR UPDATE` in a
//! transaction of its own), starts every transfer, waits until each of them
//! is blocked on a lock inside PostgreSQL (`pg_stat_activity`), and only
//! then lets them go, all at once. A transfer that read a balance before
//! taking a lock has read a stale one by then, every time.

use std::future::Future;
use std::time::Duration;

use labkit::Report;
use labkit::report::same;
use labkit::wait::{eventually, expect_err, expect_ok, within_async};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};
use sqlx_crud::{MAX_NAME_CHARS, MAX_PAGE, Page, Repo, RepoError, User, UserPatch};

/// The deadline of one repository call.
const CALL: Duration = Duration::from_secs(10);

/// How long the concurrent transfers get to reach the test's locks.
const LOCK_WAIT: Duration = Duration::from_secs(20);

/// One test's repository, its pool and database.
struct Lab {
    repo: Repo,
    pool: PgPool,
}

/// Runs `body` on a fresh, migrated database with a pool of `max`
/// connections.
fn lab_test<F, Fut>(max: u32, body: F)
where
    F: FnOnce(Lab) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = labkit::services::postgres();
    let rt = labkit::wait::runtime(2);
    rt.block_on(async {
        let pool = within_async(
            CALL,
            "PgPoolOptions::connect (the test's own pool)",
            PgPoolOptions::new().max_connections(max).connect(&db.url),
        )
        .await
        .unwrap_or_else(|e| {
            Report::new(format!("connected to {}", db.url))
                .got(format!("{e}"))
                .fail()
        });
        let repo = Repo::new(pool.clone());
        ok("repo.migrate()", repo.migrate()).await;
        ok("repo.migrate() a second time", repo.migrate()).await;
        body(Lab { repo, pool }).await;
    });
    drop(rt);
}

/// Awaits a call that must succeed.
async fn ok<T>(what: &str, call: impl Future<Output = Result<T, RepoError>>) -> T {
    expect_ok(CALL, what, hint_for, call).await
}

/// The variant's name, for messages and comparisons.
fn variant(e: &RepoError) -> &'static str {
    match e {
        RepoError::NotFound => "NotFound",
        RepoError::DuplicateEmail => "DuplicateEmail",
        RepoError::Invalid(_) => "Invalid",
        RepoError::InsufficientFunds => "InsufficientFunds",
        RepoError::Db(_) => "Db",
        RepoError::Migrate(_) => "Migrate",
    }
}

fn hint_for(e: &RepoError) -> &'static str {
    match e {
        RepoError::Migrate(_) => {
            "does src/migrations/0001_users_and_accounts.sql hold valid SQL for both tables?"
        }
        RepoError::Db(_) => {
            "read the database's message above: a missing table or column (is the schema the README's?), or an error that should have been a domain error?"
        }
        _ => "which rule of the README does this input break, if any?",
    }
}

/// Awaits a call that must fail with the variant named `want`.
async fn fails<T: std::fmt::Debug>(
    what: &str,
    want: &str,
    hint: &str,
    call: impl Future<Output = Result<T, RepoError>>,
) {
    let name = format!("RepoError::{want}");
    expect_err(CALL, what, &name, |e| variant(e) == want, hint, call).await
}

/// Locks the accounts' rows in a transaction of the test's own.
async fn hold(pool: &PgPool, ids: &[i64]) -> Transaction<'static, Postgres> {
    let mut tx = pool.begin().await.expect("begin the test's transaction");
    let locked: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(ids)
            .fetch_all(&mut *tx)
            .await
            .unwrap_or_else(|e| {
                Report::new(
            "locked the accounts' rows: SELECT id FROM accounts WHERE id = ANY($1) FOR UPDATE",
        )
        .got(format!("{e}"))
        .hint("is the table named accounts with a column id, as the README's schema says?")
        .fail()
            });
    same(
        "locked the accounts the test opened",
        ids.len(),
        locked.len(),
        "does open_account return the id of the row it inserted into accounts?",
    );
    tx
}

/// Waits until `n` backends of this database wait on a lock.
async fn wait_for_lock_waiters(pool: &PgPool, n: i64) {
    eventually(
        LOCK_WAIT,
        &format!("{n} transfers each waiting on a lock in PostgreSQL, behind the rows the test locked"),
        "does every transfer wait in the database (a row lock, FOR UPDATE)? Several copies of the repository may run in several processes: a lock in Rust (a Mutex) does not stop the others",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(pool)
            .await
            .map_err(|e| e.to_string())?;
            if waiting >= n {
                Ok(())
            } else {
                Err(format!("{waiting} of {n} were waiting on a lock"))
            }
        },
    )
    .await;
}

/// Starts `moves` (from, to, amount) at once behind the test's locks on
/// `accounts`, lets them go together, and returns each one's result.
async fn race(lab: &Lab, accounts: &[i64], moves: Vec<(i64, i64, i64)>) -> Vec<Result<(), String>> {
    let lock = hold(&lab.pool, accounts).await;
    let n = moves.len() as i64;
    let tasks: Vec<_> = moves
        .into_iter()
        .map(|(from, to, amount)| {
            let repo = lab.repo.clone();
            tokio::spawn(async move {
                repo.transfer(from, to, amount)
                    .await
                    .map_err(|e| format!("{}: {e}", variant(&e)))
            })
        })
        .collect();
    wait_for_lock_waiters(&lab.pool, n).await;
    lock.commit().await.expect("release the test's locks");
    let mut results = Vec::new();
    for task in tasks {
        let joined = within_async(
            LOCK_WAIT,
            "a transfer, after the test released its locks",
            task,
        )
        .await;
        results.push(joined.unwrap_or_else(|e| Err(format!("the task panicked: {e}"))));
    }
    results
}

// test_01: the schema exists after migrate (run twice), and a user goes in
// and comes out the same.
#[test]
fn test_01_migrate_then_create_and_get_a_user() {
    lab_test(3, |lab| async move {
        let ann = ok(
            "create_user(\"Ann\", \"ann@example.com\")",
            lab.repo.create_user("Ann", "ann@example.com"),
        )
        .await;
        same(
            "created Ann",
            ("Ann", "ann@example.com"),
            (ann.name.as_str(), ann.email.as_str()),
            "does create_user return the row as stored (RETURNING id, name, email)?",
        );
        let got = ok("get_user(ann.id)", lab.repo.get_user(ann.id)).await;
        same(
            "created Ann, then got her by id",
            ann.clone(),
            got,
            "does get_user select by id?",
        );
        let bob = ok(
            "create_user(\"Bob\", \"bob@example.com\")",
            lab.repo.create_user("Bob", "bob@example.com"),
        )
        .await;
        if bob.id <= ann.id {
            Report::new("created Ann, then Bob")
                .expected("Bob's id greater than Ann's (ids increase)")
                .got(format!("Ann {}, Bob {}", ann.id, bob.id))
                .hint("is id an identity (or serial) column the database hands out?")
                .fail();
        }
        fails(
            "get_user(an id nobody has)",
            "NotFound",
            "does get_user turn \"no row\" into RepoError::NotFound (fetch_optional)?",
            lab.repo.get_user(bob.id + 1000),
        )
        .await;
    });
}

// test_02: a second user with the same email, in any case, is the domain
// error, on create and on update, and nothing is stored.
#[test]
fn test_02_a_duplicate_email_in_any_case_is_duplicate_email() {
    lab_test(3, |lab| async move {
        let ann = ok(
            "create_user(Ann)",
            lab.repo.create_user("Ann", "ann@example.com"),
        )
        .await;
        let hint = "is there a unique index on lower(email), and do you map SQLSTATE 23505 (ErrorKind::UniqueViolation) on it to RepoError::DuplicateEmail?";
        for email in ["ann@example.com", "ANN@Example.COM", "Ann@example.com"] {
            fails(
                &format!("create_user(\"Another Ann\", {email:?}) after ann@example.com"),
                "DuplicateEmail",
                hint,
                lab.repo.create_user("Another Ann", email),
            )
            .await;
        }
        let bob = ok(
            "create_user(Bob)",
            lab.repo.create_user("Bob", "bob@example.com"),
        )
        .await;
        fails(
            "update_user(bob, email = \"ANN@EXAMPLE.COM\")",
            "DuplicateEmail",
            hint,
            lab.repo.update_user(
                bob.id,
                UserPatch {
                    email: Some("ANN@EXAMPLE.COM".into()),
                    ..UserPatch::default()
                },
            ),
        )
        .await;
        let page = ok("list_users(None, 100)", lab.repo.list_users(None, MAX_PAGE)).await;
        same(
            "tried three duplicates of Ann and one update to her email",
            vec![ann, bob],
            page.users,
            "a rejected insert or update must store nothing",
        );
    });
}

// test_03: the name's length limit counts characters, at limit - 1, limit
// and limit + 1; an email needs an @; what is refused is not stored.
#[test]
fn test_03_names_are_1_to_100_characters_and_emails_need_an_at() {
    lab_test(3, |lab| async move {
        let hint = "is the limit in characters (char_length, chars().count()), not bytes, and is 100 itself allowed?";
        for (n, c) in [(MAX_NAME_CHARS - 1, 'a'), (MAX_NAME_CHARS, 'é'), (1, 'z')] {
            let name: String = std::iter::repeat_n(c, n).collect();
            let email = format!("{n}{c}@example.com");
            let u = ok(
                &format!("create_user(a name of {n} {c:?}, {} bytes)", name.len()),
                lab.repo.create_user(&name, &email),
            )
            .await;
            same("created a user at the length limit", name, u.name, hint);
        }
        let long: String = std::iter::repeat_n('é', MAX_NAME_CHARS + 1).collect();
        let invalid = "does create_user check the README's rules, and map a CHECK violation (SQLSTATE 23514) to RepoError::Invalid?";
        fails(
            "create_user(a name of 101 'é')",
            "Invalid",
            invalid,
            lab.repo.create_user(&long, "long@example.com"),
        )
        .await;
        fails(
            "create_user(\"\", ...)",
            "Invalid",
            invalid,
            lab.repo.create_user("", "empty@example.com"),
        )
        .await;
        fails(
            "create_user(\"Ann\", \"no-at-sign\")",
            "Invalid",
            invalid,
            lab.repo.create_user("Ann", "no-at-sign"),
        )
        .await;
        let some = ok(
            "create_user(Sam)",
            lab.repo.create_user("Sam", "sam@example.com"),
        )
        .await;
        fails(
            "update_user(sam, name = 101 characters)",
            "Invalid",
            invalid,
            lab.repo.update_user(
                some.id,
                UserPatch {
                    name: Some(long.clone()),
                    ..UserPatch::default()
                },
            ),
        )
        .await;
        let page = ok("list_users(None, 100)", lab.repo.list_users(None, MAX_PAGE)).await;
        same(
            "created 4 valid users and tried 4 invalid inputs",
            4,
            page.users.len(),
            "a refused input must store nothing",
        );
    });
}

// test_04: text that looks like SQL is stored and read back literally, and
// the tables survive it.
#[test]
fn test_04_hostile_text_is_stored_literally() {
    lab_test(3, |lab| async move {
        let names = [
            "'); DROP TABLE users; --",
            "Robert'); DROP TABLE accounts; --",
            "O'Brien",
            "\" OR 1=1 --",
            "$1",
            "50% off_",
            "back\\slash",
            "two\nlines",
            "名前 🦀",
        ];
        let mut made = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let email = format!("x'{i}--@example.com");
            let u = ok(
                &format!("create_user({name:?}, {email:?})"),
                lab.repo.create_user(name, &email),
            )
            .await;
            let back = ok("get_user(its id)", lab.repo.get_user(u.id)).await;
            same(
                &format!("stored {name:?} and read it back"),
                (name.to_string(), email),
                (back.name.clone(), back.email.clone()),
                "is every value bound ($1, .bind) rather than formatted into the SQL?",
            );
            made.push(back);
        }
        let page = ok("list_users(None, 100)", lab.repo.list_users(None, MAX_PAGE)).await;
        same(
            "listed every user after the hostile names",
            made,
            page.users,
            "did one of the names change the table?",
        );
        ok(
            "open_account(1) (the accounts table still exists)",
            lab.repo.open_account(1),
        )
        .await;
    });
}

// test_05: an update changes only what the patch names; unknown ids are
// NotFound for update and delete; a deleted user is gone, the others stay.
#[test]
fn test_05_update_changes_what_the_patch_names_and_delete_removes() {
    lab_test(3, |lab| async move {
        let ann = ok(
            "create_user(Ann)",
            lab.repo.create_user("Ann", "ann@example.com"),
        )
        .await;
        let bob = ok(
            "create_user(Bob)",
            lab.repo.create_user("Bob", "bob@example.com"),
        )
        .await;
        let renamed = ok(
            "update_user(ann, name = \"Anna\")",
            lab.repo.update_user(
                ann.id,
                UserPatch {
                    name: Some("Anna".into()),
                    ..UserPatch::default()
                },
            ),
        )
        .await;
        let want = User {
            name: "Anna".into(),
            ..ann.clone()
        };
        same(
            "renamed Ann to Anna",
            want.clone(),
            renamed,
            "does a patch without an email keep the email?",
        );
        let moved = ok(
            "update_user(ann, email = \"anna@example.org\")",
            lab.repo.update_user(
                ann.id,
                UserPatch {
                    email: Some("anna@example.org".into()),
                    ..UserPatch::default()
                },
            ),
        )
        .await;
        let want = User {
            email: "anna@example.org".into(),
            ..want
        };
        same(
            "then changed her email",
            want.clone(),
            moved,
            "does a patch without a name keep the name?",
        );
        let same_again = ok(
            "update_user(ann, empty patch)",
            lab.repo.update_user(ann.id, UserPatch::default()),
        )
        .await;
        same(
            "applied an empty patch",
            want.clone(),
            same_again,
            "does an empty patch change nothing and return the user?",
        );
        same(
            "updated Ann three times",
            bob.clone(),
            ok("get_user(bob)", lab.repo.get_user(bob.id)).await,
            "does the UPDATE have a WHERE id = $1?",
        );
        let missing = bob.id + 1000;
        let hint = "an UPDATE or DELETE that matched no row is NotFound: check rows_affected, or RETURNING with fetch_optional";
        fails(
            "update_user(an unknown id)",
            "NotFound",
            hint,
            lab.repo.update_user(
                missing,
                UserPatch {
                    name: Some("X".into()),
                    ..UserPatch::default()
                },
            ),
        )
        .await;
        ok("delete_user(ann)", lab.repo.delete_user(ann.id)).await;
        fails(
            "get_user(ann) after deleting her",
            "NotFound",
            "did the DELETE run?",
            lab.repo.get_user(ann.id),
        )
        .await;
        fails(
            "delete_user(ann) a second time",
            "NotFound",
            hint,
            lab.repo.delete_user(ann.id),
        )
        .await;
        same(
            "deleted Ann",
            bob.clone(),
            ok("get_user(bob)", lab.repo.get_user(bob.id)).await,
            "does the DELETE have a WHERE id = $1?",
        );
    });
}

// test_06: pages are in id order, of the size asked, with `next` only when
// more rows exist; the page size limit at 0, 1, 100 and 101.
#[test]
fn test_06_list_pages_in_id_order_with_a_next_cursor_only_when_more_exist() {
    lab_test(3, |lab| async move {
        let mut all = Vec::new();
        for i in 0..20 {
            all.push(
                ok(
                    "create_user",
                    lab.repo
                        .create_user(&format!("user {i}"), &format!("u{i}@example.com")),
                )
                .await,
            );
        }
        let first = ok("list_users(None, 10)", lab.repo.list_users(None, 10)).await;
        same(
            "created 20 users, listed the first 10",
            Page {
                users: all[..10].to_vec(),
                next: Some(all[9].id),
            },
            first.clone(),
            "ORDER BY id LIMIT 10, and next = the last id when more rows exist",
        );
        let second = ok("list_users(next, 10)", lab.repo.list_users(first.next, 10)).await;
        same(
            "listed the second (last, full) page of 10",
            Page {
                users: all[10..].to_vec(),
                next: None,
            },
            second,
            "exactly 10 rows were left: is next None when no row comes after the page (fetch limit + 1 to know)?",
        );
        let one = ok("list_users(None, 1)", lab.repo.list_users(None, 1)).await;
        same(
            "listed a page of 1",
            Page {
                users: vec![all[0].clone()],
                next: Some(all[0].id),
            },
            one,
            "is a page of 1 allowed?",
        );
        let hundred = ok("list_users(None, 100)", lab.repo.list_users(None, MAX_PAGE)).await;
        same(
            "listed a page of 100 (the limit)",
            Page {
                users: all.clone(),
                next: None,
            },
            hundred,
            "is 100 itself allowed?",
        );
        let hint = "is the page size checked: 1 to 100?";
        fails(
            "list_users(None, 0)",
            "Invalid",
            hint,
            lab.repo.list_users(None, 0),
        )
        .await;
        fails(
            "list_users(None, 101)",
            "Invalid",
            hint,
            lab.repo.list_users(None, MAX_PAGE + 1),
        )
        .await;
        fails(
            "list_users(None, -1)",
            "Invalid",
            hint,
            lab.repo.list_users(None, -1),
        )
        .await;
        let after_last = ok(
            "list_users(Some(last id), 10)",
            lab.repo.list_users(Some(all[19].id), 10),
        )
        .await;
        same(
            "listed after the last user",
            Page {
                users: vec![],
                next: None,
            },
            after_last,
            "an empty page has next None",
        );
    });
}

// test_07: walking the pages while users are inserted and users already
// seen are deleted returns every user that existed throughout, exactly once.
#[test]
fn test_07_paging_returns_every_row_once_while_rows_come_and_go() {
    lab_test(3, |lab| async move {
        let mut originals = Vec::new();
        for i in 0..40 {
            originals.push(
                ok(
                    "create_user",
                    lab.repo
                        .create_user(&format!("old {i}"), &format!("old{i}@example.com")),
                )
                .await
                .id,
            );
        }
        let mut seen: Vec<i64> = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = ok("list_users(cursor, 7)", lab.repo.list_users(cursor, 7)).await;
            pages += 1;
            if pages > 40 {
                Report::new("walked the pages of 40 users, 7 at a time")
                    .got("more than 40 pages")
                    .hint("does the cursor move forward (WHERE id > $after)?")
                    .fail();
            }
            seen.extend(page.users.iter().map(|u| u.id));
            // Between pages: two users already seen leave, two new join.
            for u in page.users.iter().take(2) {
                ok(
                    "delete_user(a user already seen)",
                    lab.repo.delete_user(u.id),
                )
                .await;
            }
            for j in 0..2 {
                let n = pages * 10 + j;
                ok(
                    "create_user(a new user)",
                    lab.repo
                        .create_user(&format!("new {n}"), &format!("new{n}@example.com")),
                )
                .await;
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
            if page.users.is_empty() {
                break;
            }
        }
        let mut dupes = seen.clone();
        dupes.sort_unstable();
        dupes.dedup();
        let missing: Vec<i64> = originals
            .iter()
            .copied()
            .filter(|id| !seen.contains(id))
            .collect();
        if dupes.len() != seen.len() || !missing.is_empty() {
            Report::new("walked 40 users 7 at a time; after each page deleted 2 users already seen and inserted 2 new ones")
                .expected("each of the 40 original users exactly once")
                .got(format!(
                    "{} ids of which {} distinct; originals never seen: {missing:?}",
                    seen.len(),
                    dupes.len()
                ))
                .hint("OFFSET counts rows, so a deleted row shifts every later page: page by the last id seen (WHERE id > $1) instead")
                .fail();
        }
    });
}

// test_08: a transfer moves the money; every refused transfer moves
// nothing; exactly the balance is enough, one cent more is not.
#[test]
fn test_08_a_transfer_moves_money_and_a_refused_one_moves_nothing() {
    lab_test(3, |lab| async move {
        let a = ok("open_account(100)", lab.repo.open_account(100)).await;
        let b = ok("open_account(0)", lab.repo.open_account(0)).await;
        ok("transfer(a, b, 30)", lab.repo.transfer(a, b, 30)).await;
        let balances = |lab: &Lab| {
            let repo = lab.repo.clone();
            async move {
                (
                    ok("balance(a)", repo.balance(a)).await,
                    ok("balance(b)", repo.balance(b)).await,
                )
            }
        };
        same(
            "opened a = 100, b = 0, moved 30",
            (70, 30),
            balances(&lab).await,
            "does transfer debit one and credit the other?",
        );
        let invalid = "are the amount (> 0) and the two accounts (different) checked first?";
        fails(
            "transfer(a, b, 0)",
            "Invalid",
            invalid,
            lab.repo.transfer(a, b, 0),
        )
        .await;
        fails(
            "transfer(a, b, -5)",
            "Invalid",
            invalid,
            lab.repo.transfer(a, b, -5),
        )
        .await;
        fails(
            "transfer(a, a, 10)",
            "Invalid",
            invalid,
            lab.repo.transfer(a, a, 10),
        )
        .await;
        let nobody = b + 1000;
        let not_found = "is a missing account NotFound, and is the debit rolled back with it (one transaction)?";
        fails(
            "transfer(a, an unknown account, 10)",
            "NotFound",
            not_found,
            lab.repo.transfer(a, nobody, 10),
        )
        .await;
        fails(
            "transfer(an unknown account, a, 10)",
            "NotFound",
            not_found,
            lab.repo.transfer(nobody, a, 10),
        )
        .await;
        fails(
            "balance(an unknown account)",
            "NotFound",
            "does balance use fetch_optional?",
            lab.repo.balance(nobody),
        )
        .await;
        fails(
            "transfer(a, b, 71) with 70 on a",
            "InsufficientFunds",
            "is less than the amount InsufficientFunds?",
            lab.repo.transfer(a, b, 71),
        )
        .await;
        same(
            "tried 6 transfers that must be refused",
            (70, 30),
            balances(&lab).await,
            "a refused transfer moves nothing: was something written before the check failed?",
        );
        ok(
            "transfer(a, b, 70) with exactly 70 on a",
            lab.repo.transfer(a, b, 70),
        )
        .await;
        same(
            "moved a's whole balance",
            (0, 100),
            balances(&lab).await,
            "is exactly the balance enough (>=, not >)?",
        );
        fails(
            "open_account(-1)",
            "Invalid",
            "is a negative opening balance refused?",
            lab.repo.open_account(-1),
        )
        .await;
    });
}

// test_09: a credit past i64::MAX is a client error, not a panic or a wrap,
// and moves nothing.
#[test]
fn test_09_a_credit_that_would_overflow_is_invalid_and_moves_nothing() {
    lab_test(3, |lab| async move {
        let a = ok("open_account(100)", lab.repo.open_account(100)).await;
        let full = ok(
            "open_account(i64::MAX - 5)",
            lab.repo.open_account(i64::MAX - 5),
        )
        .await;
        fails(
            "transfer(a, an account at i64::MAX - 5, 10)",
            "Invalid",
            "the sum does not fit in an i64 (or a BIGINT): check it (checked_add) and say Invalid",
            lab.repo.transfer(a, full, 10),
        )
        .await;
        let after = (
            ok("balance(a)", lab.repo.balance(a)).await,
            ok("balance(full)", lab.repo.balance(full)).await,
        );
        same(
            "tried the overflowing transfer",
            (100, i64::MAX - 5),
            after,
            "a refused transfer moves nothing",
        );
        ok(
            "transfer(a, full, 5) (fits exactly)",
            lab.repo.transfer(a, full, 5),
        )
        .await;
        same(
            "moved 5 onto i64::MAX - 5",
            i64::MAX,
            ok("balance(full)", lab.repo.balance(full)).await,
            "i64::MAX itself fits",
        );
    });
}

// test_10: 50 transfers released at once never lose an update.
#[test]
fn test_10_heavy_50_concurrent_transfers_lose_no_update() {
    lab_test(56, |lab| async move {
        let a = ok("open_account(1000)", lab.repo.open_account(1000)).await;
        let b = ok("open_account(0)", lab.repo.open_account(0)).await;
        let results = race(&lab, &[a, b], vec![(a, b, 10); 50]).await;
        let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        if !failed.is_empty() {
            Report::new("released 50 transfers of 10 from a (1000) to b (0) at once")
                .expected("all 50 to succeed")
                .got(format!("{} failed, e.g. {}", failed.len(), failed[0]))
                .hint("with enough money every transfer succeeds; if they conflict, wait for the lock rather than failing")
                .fail();
        }
        let after = (
            ok("balance(a)", lab.repo.balance(a)).await,
            ok("balance(b)", lab.repo.balance(b)).await,
        );
        same(
            "released 50 transfers of 10 from a (1000) to b (0) at once",
            (500, 500),
            after,
            "each transfer read the balance before the others wrote theirs: lock the rows (SELECT ... FOR UPDATE) in the transaction before reading them, or update relative to the stored value",
        );
    });
}

// test_11: 50 transfers of 10 from an account holding 100: exactly 10 go
// through, 40 are refused, and no balance goes negative.
#[test]
fn test_11_heavy_concurrent_overdrafts_never_go_negative() {
    lab_test(56, |lab| async move {
        let a = ok("open_account(100)", lab.repo.open_account(100)).await;
        let b = ok("open_account(0)", lab.repo.open_account(0)).await;
        let results = race(&lab, &[a, b], vec![(a, b, 10); 50]).await;
        let passed = results.iter().filter(|r| r.is_ok()).count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(e) if e.starts_with("InsufficientFunds")))
            .count();
        let after = (
            ok("balance(a)", lab.repo.balance(a)).await,
            ok("balance(b)", lab.repo.balance(b)).await,
        );
        if (passed, refused, after) != (10, 40, (0, 100)) {
            let other = results.iter().find_map(|r| {
                r.as_ref()
                    .err()
                    .filter(|e| !e.starts_with("InsufficientFunds"))
            });
            Report::new("released 50 transfers of 10 from a (100) to b (0) at once")
                .expected("10 Ok, 40 Err(InsufficientFunds), then a = 0 and b = 100")
                .got(format!(
                    "{passed} Ok, {refused} InsufficientFunds, then (a, b) = {after:?}{}",
                    other.map(|e| format!("; another error: {e}")).unwrap_or_default()
                ))
                .hint("the check (balance >= amount) must see the balance as it is once the row is locked: lock first (FOR UPDATE), then check, then write, in one transaction")
                .fail();
        }
    });
}

// test_12: transfers in both directions at once neither deadlock nor fail.
#[test]
fn test_12_heavy_opposite_transfers_do_not_deadlock() {
    lab_test(56, |lab| async move {
        let a = ok("open_account(1000)", lab.repo.open_account(1000)).await;
        let b = ok("open_account(1000)", lab.repo.open_account(1000)).await;
        let mut moves = Vec::new();
        for _ in 0..20 {
            moves.push((a, b, 10));
            moves.push((b, a, 10));
        }
        let results = race(&lab, &[a, b], moves).await;
        let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        if !failed.is_empty() {
            Report::new("released 20 transfers a -> b and 20 b -> a (10 each, both holding 1000) at once")
                .expected("all 40 to succeed")
                .got(format!("{} failed, e.g. {}", failed.len(), failed[0]))
                .hint("a deadlock: one transfer holds a and waits for b, the other holds b and waits for a. Lock both rows in the same order every time (ORDER BY id FOR UPDATE)")
                .fail();
        }
        let after = (
            ok("balance(a)", lab.repo.balance(a)).await,
            ok("balance(b)", lab.repo.balance(b)).await,
        );
        same(
            "ran 40 opposite transfers",
            (1000, 1000),
            after,
            "was an update lost?",
        );
    });
}
