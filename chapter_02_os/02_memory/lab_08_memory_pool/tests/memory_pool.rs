//! The grader for lab 08, a memory pool.
//!
//! What a pool promises, checked through its API and the heap itself:
//!
//! - capacity is enforced, and a full pool gives the value back;
//! - a dropped handle's slot is reused: on a full pool with one slot freed,
//!   the next value must land at the freed value's address;
//! - every value is dropped exactly once: when its handle is dropped, never
//!   when it is handed back by `into_inner`, also after the pool is dropped;
//! - no heap allocation after construction: this test binary installs a
//!   counting `#[global_allocator]` that counts **per thread** (a
//!   thread-local counter), so the count holds under plain `cargo test`,
//!   where the tests run as concurrent threads of one process;
//! - values are aligned for their type, even `#[repr(align(4096))]` ones;
//! - zero-sized types work.
//!
//! Every scenario runs under `labkit::wait::within`, on a fresh thread:
//! a loop that never ends fails in seconds, and the per-thread counters of
//! that thread see only the scenario's own work.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use labkit::Report;
use labkit::report::same;
use labkit::wait::{panic_message, within};
use memory_pool::{Handle, Pool};

/// How long one scenario may take: each is at most a few thousand pool
/// operations.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// A per-thread counting allocator
// ---------------------------------------------------------------------------

/// Forwards to the system allocator and counts, for the calling thread, how
/// many allocations it made and how many bytes it holds.
struct CountingAlloc;

thread_local! {
    // `const` initialisers and plain `Cell`s: no lazy initialisation and no
    // destructor, so using them inside the allocator never allocates or
    // recurses.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static LIVE_BYTES: Cell<i64> = const { Cell::new(0) };
}

fn record(allocations: u64, bytes: i64) {
    // `try_with`: during thread teardown the slots may already be gone.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + allocations));
    let _ = LIVE_BYTES.try_with(|c| c.set(c.get() + bytes));
}

// SAFETY: every method forwards to `System` with the same arguments; the
// counting touches only thread-local `Cell`s, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(1, layout.size() as i64);
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(1, layout.size() as i64);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(0, -(layout.size() as i64));
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(1, new_size as i64 - layout.size() as i64);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// This thread's allocation count and live heap bytes so far.
fn heap() -> (u64, i64) {
    (ALLOCATIONS.with(Cell::get), LIVE_BYTES.with(Cell::get))
}

// ---------------------------------------------------------------------------
// Values that tell on themselves
// ---------------------------------------------------------------------------

thread_local! {
    /// How many times each `Tracked` id has been dropped, on this thread.
    static DROPS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// How many `Zst`s have been dropped on this thread.
    static ZST_DROPS: Cell<u32> = const { Cell::new(0) };
}

/// A value that records its drop under its id. It holds no heap memory, so
/// even a buggy pool that drops it twice cannot corrupt the test.
#[derive(Debug, PartialEq, Eq)]
struct Tracked {
    id: usize,
    payload: [u64; 3],
}

impl Tracked {
    fn new(id: usize) -> Tracked {
        Tracked {
            id,
            payload: Tracked::payload_of(id),
        }
    }

    /// The payload `Tracked::new(id)` carries.
    fn payload_of(id: usize) -> [u64; 3] {
        [id as u64 * 3, id as u64 * 5, id as u64 * 7]
    }

    /// What a value looks like, without making (and later dropping) one.
    fn fields(&self) -> (usize, [u64; 3]) {
        (self.id, self.payload)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        DROPS.with(|d| {
            let mut d = d.borrow_mut();
            if d.len() <= self.id {
                d.resize(self.id + 1, 0);
            }
            d[self.id] += 1;
        });
    }
}

/// How many times `Tracked` `id` has been dropped on this thread.
fn drops(id: usize) -> u32 {
    DROPS.with(|d| d.borrow().get(id).copied().unwrap_or(0))
}

/// A zero-sized type that counts its drops.
#[derive(Debug)]
struct Zst;

impl Drop for Zst {
    fn drop(&mut self) {
        ZST_DROPS.with(|c| c.set(c.get() + 1));
    }
}

/// A cache-line-aligned value, like a per-core counter padded against false
/// sharing.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(align(64))]
struct Line {
    value: u64,
}

/// A page-aligned value, like a buffer for `O_DIRECT` I/O.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(align(4096))]
struct Page {
    value: u64,
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Runs a scenario on a fresh thread with a deadline. A panic from the
/// library (not from a failed check, which is already a report) becomes a
/// report saying which scenario was running.
#[track_caller]
fn scenario<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    match catch_unwind(AssertUnwindSafe(|| within(DEADLINE, what, f))) {
        Ok(v) => v,
        Err(payload) => {
            let msg = panic_message(&*payload);
            if msg.contains("[test]") {
                // A check inside the scenario failed: its report says it all.
                std::panic::resume_unwind(payload)
            }
            Report::new(format!("ran: {what}"))
                .expected("every call to return")
                .got(format!("a panic: {msg}"))
                .hint("`not yet implemented` is a todo!() still to replace; an index out of bounds in try_alloc often means the capacity check is off by one")
                .fail()
        }
    }
}

/// Checks `len`, `available`, `capacity` and `is_empty` together.
#[track_caller]
fn check_counts<T>(what: &str, pool: &Pool<T>, capacity: usize, live: usize) {
    same(
        &format!("{what}, then (capacity(), len(), available(), is_empty())"),
        (capacity, live, capacity - live, live == 0),
        (
            pool.capacity(),
            pool.len(),
            pool.available(),
            pool.is_empty(),
        ),
        "len() counts live handles (dropped ones no longer count), available() is capacity() - len()",
    );
}

/// The address of a handle's value.
fn addr<T>(h: &Handle<T>) -> usize {
    &**h as *const T as usize
}

/// Allocates and fails with a report if the pool refuses.
#[track_caller]
fn alloc<T>(what: &str, pool: &Pool<T>, value: T) -> Handle<T> {
    match pool.try_alloc(value) {
        Ok(h) => h,
        Err(_) => Report::new(what)
            .expected(format!(
                "try_alloc to succeed: the pool has capacity {} and {} live values",
                pool.capacity(),
                pool.len()
            ))
            .got("Err (the pool says it is full)")
            .hint("is a slot given back when its handle is dropped? is the capacity check off by one?")
            .fail(),
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

// A new pool reports the capacity it was built with, and holds nothing.
#[test]
fn test_01_a_new_pool_is_empty_with_the_capacity_asked_for() {
    for capacity in [0, 1, 3, 100] {
        scenario(
            &format!("Pool::<u64>::with_capacity({capacity})"),
            move || {
                let pool = Pool::<u64>::with_capacity(capacity);
                check_counts(
                    &format!("called Pool::<u64>::with_capacity({capacity})"),
                    &pool,
                    capacity,
                    0,
                );
            },
        );
    }
}

// try_alloc moves the value in; the handle reads and writes it, and len()
// and available() follow.
#[test]
fn test_02_try_alloc_stores_the_value_and_the_handle_derefs_to_it() {
    scenario(
        "Pool::<String>::with_capacity(4), then try_alloc three Strings",
        || {
            let pool = Pool::<String>::with_capacity(4);
            let what = "Pool::<String>::with_capacity(4)";
            let mut a = alloc(what, &pool, "alpha".to_string());
            check_counts(&format!("called {what}, try_alloc(\"alpha\")"), &pool, 4, 1);
            let b = alloc(what, &pool, "beta".to_string());
            let c = alloc(what, &pool, "gamma".to_string());
            check_counts(
                &format!("called {what}, then try_alloc 3 times"),
                &pool,
                4,
                3,
            );
            same(
                "read the three values through their handles (*a, *b, *c)",
                ("alpha", "beta", "gamma"),
                (a.as_str(), b.as_str(), c.as_str()),
                "each handle derefs to the value moved into its own slot",
            );
            a.push_str("-changed");
            same(
                "wrote through a handle (a.push_str(\"-changed\")), then read *a, *b",
                ("alpha-changed", "beta"),
                (a.as_str(), b.as_str()),
                "DerefMut must give access to the same slot Deref reads",
            );
            let slots = [a.slot(), b.slot(), c.slot()];
            let distinct: HashSet<usize> = slots.iter().copied().collect();
            if distinct.len() != 3 || slots.iter().any(|&s| s >= 4) {
                Report::new("allocated 3 values in a pool of capacity 4, then read slot() of each")
                    .expected("three different slots in 0..4")
                    .got(format!("{slots:?}"))
                    .hint(
                        "slot() is the index of the value's slot; two live handles never share one",
                    )
                    .fail();
            }
        },
    );
}

// Live values never overlap: filling a pool and writing each value, every
// value reads back intact and no two occupy the same bytes.
#[test]
fn test_03_live_values_occupy_separate_slots() {
    for capacity in [1, 2, 7, 64] {
        let what = format!("Pool::<[u64; 4]>::with_capacity({capacity}), then fill it");
        scenario(&what.clone(), move || {
            let pool = Pool::<[u64; 4]>::with_capacity(capacity);
            let mut handles: Vec<Handle<[u64; 4]>> = (0..capacity)
                .map(|i| alloc(&what, &pool, [i as u64; 4]))
                .collect();
            check_counts(&format!("called {what}"), &pool, capacity, capacity);
            for (i, h) in handles.iter_mut().enumerate() {
                h[3] = 1000 + i as u64;
            }
            for (i, h) in handles.iter().enumerate() {
                let i = i as u64;
                same(
                    &format!(
                        "called {what}, wrote h[3] = 1000 + i through every handle, then read value {i} back"
                    ),
                    [i, i, i, 1000 + i],
                    **h,
                    "each value needs its own slot; do two handles point at the same memory?",
                );
            }
            let mut spans: Vec<(usize, usize)> = handles
                .iter()
                .map(|h| (addr(h), addr(h) + size_of::<[u64; 4]>()))
                .collect();
            spans.sort();
            for w in spans.windows(2) {
                if w[0].1 > w[1].0 {
                    Report::new(format!("called {what}, then compared the values' addresses"))
                        .expected("no two values sharing any byte")
                        .got(format!("values at {:#x}..{:#x} and {:#x}..{:#x} overlap", w[0].0, w[0].1, w[1].0, w[1].1))
                        .hint("slot i should start at i * size_of::<T>() (or be element i of a slice of T)")
                        .fail();
                }
            }
            let slots: HashSet<usize> = handles.iter().map(|h| h.slot()).collect();
            if slots.len() != capacity || slots.iter().any(|&s| s >= capacity) {
                Report::new(format!("called {what}, then read every slot()"))
                    .expected(format!("{capacity} different slots, each in 0..{capacity}"))
                    .got(format!(
                        "{:?}",
                        handles.iter().map(|h| h.slot()).collect::<Vec<_>>()
                    ))
                    .hint("slot() is the index of the handle's slot")
                    .fail();
            }
        });
    }
}

// A full pool refuses the next value and gives it back unharmed, for every
// capacity, including 0.
#[test]
fn test_04_a_full_pool_refuses_and_gives_the_value_back() {
    for capacity in [0, 1, 2, 5, 64] {
        let what = format!(
            "Pool::<Tracked>::with_capacity({capacity}), try_alloc {capacity} values, then one more"
        );
        scenario(&what.clone(), move || {
            let pool = Pool::<Tracked>::with_capacity(capacity);
            let handles: Vec<Handle<Tracked>> = (0..capacity)
                .map(|i| alloc(&what, &pool, Tracked::new(i)))
                .collect();
            let extra = capacity + 1;
            match pool.try_alloc(Tracked::new(extra)) {
                Ok(h) => Report::new(format!("called {what}"))
                    .expected(format!("Err: all {capacity} slots are taken"))
                    .got(format!("Ok, in slot {}", h.slot()))
                    .hint("the pool holds at most capacity values at once: is the check `< capacity` (not `<=`)?")
                    .fail(),
                Err(back) => {
                    same(
                        &format!("called {what}: the value in the Err"),
                        (extra, Tracked::payload_of(extra)),
                        back.fields(),
                        "a full pool gives back the value it was offered, untouched",
                    );
                    same(
                        &format!("called {what}: times the refused value was dropped before the test dropped it"),
                        0,
                        drops(extra),
                        "the value goes back to the caller in the Err: the pool must not drop it",
                    );
                }
            }
            check_counts(&format!("called {what}"), &pool, capacity, capacity);
            drop(handles);
        });
    }
}

// Dropping a handle gives its slot back: on a full pool, the next value lands
// exactly where the dropped one was, and alloc/drop cycles never run dry.
#[test]
fn test_05_a_dropped_handle_gives_its_slot_back_for_reuse() {
    for capacity in [1, 3, 16] {
        let what = format!("Pool::<u64>::with_capacity({capacity}), filled");
        scenario(&what.clone(), move || {
            let pool = Pool::<u64>::with_capacity(capacity);
            let mut handles: Vec<Handle<u64>> = (0..capacity)
                .map(|i| alloc(&what, &pool, i as u64))
                .collect();
            for k in [capacity / 2, 0, capacity - 1] {
                let old = handles.remove(k);
                let (old_addr, old_slot) = (addr(&old), old.slot());
                drop(old);
                let step = format!("called {what}, dropped the handle of value {k}");
                check_counts(&step, &pool, capacity, capacity - 1);
                let new = match pool.try_alloc(500 + k as u64) {
                    Ok(h) => h,
                    Err(_) => Report::new(format!("{step}, then try_alloc(another)"))
                        .expected("Ok: the dropped handle's slot is free again")
                        .got("Err (the pool says it is full)")
                        .hint("Drop for Handle must give the slot back to the pool (after dropping the value)")
                        .fail(),
                };
                same(
                    &format!("{step}, then try_alloc(another): the new value's address (and slot)"),
                    (old_addr, old_slot),
                    (addr(&new), new.slot()),
                    "the only free slot is the one just given back: the new value must go there",
                );
                same(
                    &format!("{step}, then try_alloc({})", 500 + k),
                    500 + k as u64,
                    *new,
                    "the reused slot must hold the new value",
                );
                handles.insert(k, new);
                check_counts(
                    &format!("{step}, then allocated again"),
                    &pool,
                    capacity,
                    capacity,
                );
            }
            drop(handles);
            check_counts(
                &format!("called {what}, then dropped every handle"),
                &pool,
                capacity,
                0,
            );
            // Many more allocations than slots, one at a time.
            for i in 0..10 * capacity {
                let h = alloc(
                    &format!(
                        "Pool::<u64>::with_capacity({capacity}), then try_alloc and drop, {} times",
                        10 * capacity
                    ),
                    &pool,
                    i as u64,
                );
                same(
                    "read the value just allocated",
                    i as u64,
                    *h,
                    "the handle derefs to its value",
                );
            }
            check_counts(
                &format!("called {what}, then ran alloc/drop cycles"),
                &pool,
                capacity,
                0,
            );
        });
    }
}

// Each value is dropped exactly once, when its handle is dropped: not
// before, not twice, not never.
#[test]
fn test_06_each_value_is_dropped_exactly_once_when_its_handle_is() {
    scenario(
        "Pool::<Tracked>::with_capacity(8), alloc and drop in mixed order",
        || {
            let what = "Pool::<Tracked>::with_capacity(8)";
            let pool = Pool::<Tracked>::with_capacity(8);
            let mut handles: Vec<Option<Handle<Tracked>>> = (0..8)
                .map(|i| Some(alloc(what, &pool, Tracked::new(i))))
                .collect();
            for id in 0..8 {
                same(
                    &format!("allocated 8 values, then counted drops of value {id}"),
                    0,
                    drops(id),
                    "a value is dropped when its handle is dropped, not when it is allocated",
                );
            }
            for (next, k) in (8..).zip([3, 0, 7, 5, 1]) {
                let id = handles[k].as_ref().map(|h| h.id).unwrap();
                handles[k] = None;
                same(
                    &format!("dropped the handle of value {id}, then counted its drops"),
                    1,
                    drops(id),
                    if drops(id) == 0 {
                        "Drop for Handle must drop the value in the slot (drop_in_place / assume_init_drop), or it leaks"
                    } else {
                        "dropped more than once: is the value dropped both by the handle and again elsewhere?"
                    },
                );
                // Refill the freed slot: reusing it must not drop anything.
                handles[k] = Some(alloc(what, &pool, Tracked::new(next)));
                same(
                    &format!(
                        "dropped value {id}'s handle, allocated value {next} in its slot, then counted drops of {id}"
                    ),
                    1,
                    drops(id),
                    "writing a new value into a freed slot must not drop the old one again (it is already gone: write, don't assign)",
                );
            }
            // Assigning through DerefMut drops the old value: ordinary Rust.
            let h = handles[2].as_mut().unwrap();
            let old = h.id;
            **h = Tracked::new(100);
            same(
                &format!(
                    "assigned *handle = Tracked(100) over value {old}, then counted its drops"
                ),
                1,
                drops(old),
                "DerefMut must hand out the real slot",
            );
            let live: Vec<usize> = handles.iter().map(|h| h.as_ref().unwrap().id).collect();
            drop(handles);
            for id in live {
                same(
                    &format!("dropped every handle, then counted drops of value {id}"),
                    1,
                    drops(id),
                    "each handle drops its own value exactly once",
                );
            }
            check_counts(
                &format!("called {what}, then dropped every handle"),
                &pool,
                8,
                0,
            );
        },
    );
}

// into_inner moves the value out without dropping it, and frees the slot.
#[test]
fn test_07_into_inner_moves_the_value_out_and_frees_the_slot() {
    scenario(
        "Pool::<Tracked>::with_capacity(2), try_alloc twice, Handle::into_inner",
        || {
            let what = "Pool::<Tracked>::with_capacity(2)";
            let pool = Pool::<Tracked>::with_capacity(2);
            let a = alloc(what, &pool, Tracked::new(0));
            let _b = alloc(what, &pool, Tracked::new(1));
            let a_addr = addr(&a);
            let value = Handle::into_inner(a);
            same(
                "called Handle::into_inner(handle of value 0)",
                (0, Tracked::payload_of(0)),
                value.fields(),
                "into_inner returns the value that was in the slot",
            );
            same(
                "called Handle::into_inner(handle of value 0), then counted its drops",
                0,
                drops(0),
                "into_inner moves the value out: neither it nor the handle's Drop may drop it (std::mem::forget or ManuallyDrop the handle)",
            );
            check_counts("called into_inner on one of two live handles", &pool, 2, 1);
            let c = alloc(
                &format!("{what}, into_inner one handle, then try_alloc"),
                &pool,
                Tracked::new(2),
            );
            same(
                "called into_inner, then try_alloc: the new value's address",
                a_addr,
                addr(&c),
                "into_inner frees the slot, so the next value reuses it",
            );
            drop(value);
            same(
                "dropped the value into_inner returned, then counted its drops",
                1,
                drops(0),
                "the value is dropped once, by its new owner",
            );
        },
    );
}

// Handles keep the pool's storage alive: dropping the Pool leaves live
// values usable, and when the last handle goes every value has been dropped
// once and all the pool's memory is freed.
#[test]
fn test_08_handles_outlive_the_pool_and_the_storage_is_freed_last() {
    scenario(
        "Pool::<Tracked>::with_capacity(4), 3 handles, drop the pool first",
        || {
            DROPS.with(|d| d.borrow_mut().resize(16, 0)); // so counting drops allocates nothing
            let (_, before) = heap();
            let pool = Pool::<Tracked>::with_capacity(4);
            let what = "Pool::<Tracked>::with_capacity(4)";
            let mut handles: Vec<Handle<Tracked>> = (0..3)
                .map(|i| alloc(what, &pool, Tracked::new(i)))
                .collect();
            drop(pool);
            for id in 0..3 {
                same(
                    &format!(
                        "allocated 3 values, dropped the Pool, then counted drops of value {id}"
                    ),
                    0,
                    drops(id),
                    "dropping the Pool must not drop values that handles still own: the handles keep the storage alive (Rc)",
                );
            }
            handles[1].payload[0] = 4242;
            same(
                "dropped the Pool, then wrote and read a value through its handle",
                4242,
                handles[1].payload[0],
                "the storage must stay valid while any handle lives",
            );
            drop(handles);
            for id in 0..3 {
                same(
                    &format!(
                        "dropped the Pool, then every handle, then counted drops of value {id}"
                    ),
                    1,
                    drops(id),
                    "each value is dropped exactly once, by its handle",
                );
            }
            let (_, after) = heap();
            same(
                "built a pool, allocated 3 values, dropped the pool, then the handles: heap bytes still held by this thread",
                0,
                after - before,
                "when the last handle is dropped, the pool's storage must be freed (is there an Rc cycle, a Box::leak, or a mem::forget?)",
            );
            // And a pool dropped with no live handle frees everything at once.
            let (_, before) = heap();
            let pool = Pool::<Tracked>::with_capacity(4);
            drop(alloc(what, &pool, Tracked::new(9)));
            drop(pool);
            let (_, after) = heap();
            same(
                "built a pool, allocated and dropped one value, dropped the pool: heap bytes still held by this thread",
                0,
                after - before,
                "dropping the Pool with no live handles must free its storage",
            );
        },
    );
}

// After construction the pool never calls the heap allocator: not to
// allocate, not to free, not when full, not when handing slots back.
#[test]
fn test_09_no_heap_allocation_after_construction() {
    scenario(
        "Pool::<[u64; 8]>::with_capacity(64), then alloc/free without touching the heap",
        || {
            const CAP: usize = 64;
            let mut handles: Vec<Handle<[u64; 8]>> = Vec::with_capacity(CAP);
            let pool = Pool::<[u64; 8]>::with_capacity(CAP);
            let what = "Pool::<[u64; 8]>::with_capacity(64)";
            let (start, _) = heap();
            // Reads the counter before formatting anything: building a message
            // allocates, and must not count against the pool.
            let check = |phase: &str, hint: &str| {
                let (now, _) = heap();
                if now != start {
                    Report::new(format!("called {what}, then {phase}"))
                    .expected("no heap allocation by this thread since with_capacity returned")
                    .got(format!("{} allocations (counted by the test's #[global_allocator], per thread)", now - start))
                    .hint(hint)
                    .fail();
                }
            };
            for i in 0..CAP {
                handles.push(alloc(what, &pool, [i as u64; 8]));
            }
            check(
                "filled it with 64 try_allocs",
                "try_alloc must reuse memory reserved by with_capacity: no Box::new, no Vec push beyond a reserved capacity",
            );
            let refused = pool.try_alloc([0; 8]).is_err();
            same(
                "filled the pool, then try_alloc once more: refused?",
                true,
                refused,
                "a full pool returns Err",
            );
            check(
                "tried one more try_alloc on the full pool",
                "refusing must not allocate either",
            );
            while let Some(h) = handles.pop() {
                drop(h);
            }
            check(
                "dropped all 64 handles",
                "giving slots back must not allocate: reserve room for every slot in the free list when the pool is built (Vec::with_capacity), so push never grows it",
            );
            for round in 0..3 {
                for i in 0..CAP {
                    handles.push(alloc(what, &pool, [round * 100 + i as u64; 8]));
                }
                // Drop in a scrambled order: slots come back out of order.
                for k in (0..CAP).rev().step_by(3) {
                    drop(handles.swap_remove(k));
                }
                handles.clear();
            }
            check(
                "refilled and emptied it 3 more times",
                "reusing freed slots must not allocate",
            );
            let h = alloc(what, &pool, [7; 8]);
            let v = Handle::into_inner(h);
            same(
                "called into_inner",
                [7; 8],
                v,
                "into_inner returns the value",
            );
            check("called into_inner once", "into_inner must not allocate");
        },
    );
}

/// Fills a pool of an over-aligned type and checks every address.
fn check_alignment<T: Copy + PartialEq + std::fmt::Debug>(
    name: &str,
    make: fn(u64) -> T,
    capacity: usize,
) {
    let what = format!("Pool::<{name}>::with_capacity({capacity}), then filled it");
    let align = align_of::<T>();
    let pool = Pool::<T>::with_capacity(capacity);
    let handles: Vec<Handle<T>> = (0..capacity)
        .map(|i| alloc(&what, &pool, make(i as u64)))
        .collect();
    for h in &handles {
        let a = addr(h);
        if a % align != 0 {
            Report::new(format!("called {what}, then looked at the address of every value"))
                .expected(format!("every address a multiple of align_of::<{name}>() = {align}"))
                .got(format!("the value in slot {} is at {a:#x}, {} bytes past a multiple of {align}", h.slot(), a % align))
                .hint(format!("store the slots as a slice of (MaybeUninit<)T(>), whose allocation has T's alignment; a Vec<u8> is only aligned for u8 (a Layout with align {align} also works)"))
                .fail();
        }
    }
    for (i, h) in handles.iter().enumerate() {
        same(
            &format!("called {what}, then read value {i} back"),
            make(i as u64),
            **h,
            "each value must stay intact in its own slot",
        );
    }
}

// Values of over-aligned types are aligned: a 64-byte-aligned and a
// 4096-byte-aligned type, at several capacities.
#[test]
fn test_10_over_aligned_values_are_aligned() {
    scenario(
        "pools of #[repr(align(64))] and #[repr(align(4096))] values",
        || {
            for capacity in [1, 3, 8, 33] {
                check_alignment("Line", |v| Line { value: v }, capacity);
                check_alignment("Page", |v| Page { value: v }, capacity);
                check_alignment("u64", |v| v, capacity);
                check_alignment("u8", |v| v as u8, capacity);
            }
        },
    );
}

// A pool of a zero-sized type still enforces capacity, reuses slots and drops
// each value exactly once.
#[test]
fn test_11_zero_sized_values_work() {
    scenario("Pool::<Zst>::with_capacity(5)", || {
        let what = "Pool::<Zst>::with_capacity(5)";
        let pool = Pool::<Zst>::with_capacity(5);
        check_counts(&format!("called {what}"), &pool, 5, 0);
        let mut handles: Vec<Handle<Zst>> = (0..5).map(|_| alloc(what, &pool, Zst)).collect();
        check_counts(
            &format!("called {what}, then try_alloc 5 times"),
            &pool,
            5,
            5,
        );
        match pool.try_alloc(Zst) {
            Ok(_) => Report::new(format!("called {what}, try_alloc 5 times, then once more"))
                .expected("Err: all 5 slots are taken, even though a Zst takes no memory")
                .got("Ok")
                .hint("count slots, not bytes: with size 0, a byte budget is never exhausted")
                .fail(),
            Err(back) => drop(back),
        }
        let before = ZST_DROPS.with(Cell::get);
        same(
            "filled a Zst pool, had one more refused and dropped it: Zst drops so far",
            1,
            before,
            "only the refused value (which the test dropped) has been dropped so far",
        );
        drop(handles.pop());
        drop(handles.pop());
        same(
            &format!("called {what}, filled it, dropped 2 handles: Zst drops"),
            3,
            ZST_DROPS.with(Cell::get),
            "dropping a handle drops its value, even a zero-sized one (its Drop impl still runs)",
        );
        check_counts(
            &format!("called {what}, filled it, dropped 2 handles"),
            &pool,
            5,
            3,
        );
        let slots: HashSet<usize> = handles.iter().map(|h| h.slot()).collect();
        same(
            "read slot() of the 3 live Zst handles: how many distinct",
            3,
            slots.len(),
            "each live handle has its own slot, even for a zero-sized type",
        );
        handles.push(alloc(what, &pool, Zst));
        handles.push(alloc(what, &pool, Zst));
        drop(handles);
        same(
            &format!("called {what}, refilled it, dropped every handle: Zst drops"),
            8,
            ZST_DROPS.with(Cell::get),
            "7 values were allocated and 1 refused: each must be dropped exactly once",
        );
        check_counts(
            &format!("called {what}, then dropped every handle"),
            &pool,
            5,
            0,
        );
    });
}

thread_local! {
    /// What a `Reentrant` value saw of its pool from inside its own `Drop`:
    /// `(len(), available(), whether a try_alloc was refused)`.
    static SEEN_IN_DROP: Cell<Option<(usize, usize, Option<bool>)>> = const { Cell::new(None) };
}

/// A value that holds an `Rc` of its own pool and, when dropped, looks at
/// the pool and tries to allocate from it, as a node returning a child to a
/// free list might.
struct Reentrant {
    pool: Option<std::rc::Rc<Pool<Reentrant>>>,
}

impl Drop for Reentrant {
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else {
            return;
        };
        let (len, available) = (pool.len(), pool.available());
        // Only try to allocate when the pool says it is full: a pool that
        // already gave this slot back would hand out memory still being
        // dropped.
        let refused = (available == 0).then(|| match pool.try_alloc(Reentrant { pool: None }) {
            Ok(h) => {
                std::mem::forget(h);
                false
            }
            Err(_) => true,
        });
        SEEN_IN_DROP.with(|s| s.set(Some((len, available, refused))));
    }
}

// While a value is being dropped its slot is still taken: a value's Drop
// that uses the pool sees it full and cannot be handed its own slot; the
// slot is free once the drop has returned.
#[test]
fn test_12_a_value_is_dropped_before_its_slot_is_freed() {
    scenario(
        "Pool::<Reentrant>::with_capacity(1), a value whose Drop uses the pool",
        || {
            let what = "Pool::<Reentrant>::with_capacity(1)";
            let pool = std::rc::Rc::new(Pool::<Reentrant>::with_capacity(1));
            let h = alloc(
                what,
                &pool,
                Reentrant {
                    pool: Some(std::rc::Rc::clone(&pool)),
                },
            );
            drop(h);
            let seen = SEEN_IN_DROP.with(Cell::get);
            let step = format!(
                "called {what}, allocated a value that holds an Rc of the pool, dropped its handle; inside the value's Drop, read len() and available() and, if full, called try_alloc"
            );
            match seen {
                None => Report::new(&step)
                    .expected("the value's Drop to run when its handle is dropped")
                    .got("it did not run")
                    .hint("Drop for Handle must drop the value in the slot (drop_in_place)")
                    .fail(),
                Some((1, 0, Some(true))) => {}
                Some((len, available, refused)) => Report::new(&step)
                    .expected("len() == 1, available() == 0 and try_alloc refused: the slot is still taken while its value is being dropped")
                    .got(format!(
                        "len() == {len}, available() == {available}{}",
                        match refused {
                            Some(false) => ", and try_alloc was given a slot",
                            _ => "",
                        }
                    ))
                    .hint("does Drop for Handle give the slot back before dropping the value? Drop the value first, then free the slot: otherwise the value's own Drop can be handed the memory it is still in")
                    .fail(),
            }
            check_counts(&format!("{step}; after the drop returned"), &pool, 1, 0);
            drop(alloc(
                &format!("{what}, after the value's drop returned, try_alloc"),
                &pool,
                Reentrant { pool: None },
            ));
        },
    );
}

// into_inner on the last handle of a dropped pool frees the storage at once:
// the handle's reference to the storage is released, not forgotten.
#[test]
fn test_13_into_inner_on_the_last_handle_frees_the_storage() {
    scenario(
        "Pool::<Tracked>::with_capacity(4), one handle, drop the pool, into_inner",
        || {
            DROPS.with(|d| d.borrow_mut().resize(16, 0)); // so counting drops allocates nothing
            let what = "Pool::<Tracked>::with_capacity(4)";
            let (_, before) = heap();
            let pool = Pool::<Tracked>::with_capacity(4);
            let h = alloc(what, &pool, Tracked::new(5));
            drop(pool);
            let value = Handle::into_inner(h);
            let (_, after) = heap();
            same(
                "built a pool, allocated one value, dropped the Pool, called into_inner on the one handle: heap bytes still held by this thread",
                0,
                after - before,
                "into_inner consumes the last reference to the storage: does it release the handle's Rc (not just forget the whole handle with mem::forget)?",
            );
            same(
                "called into_inner on the last handle, then counted drops of its value",
                (0, (5, Tracked::payload_of(5))),
                (drops(5), value.fields()),
                "into_inner hands the value back intact and does not drop it",
            );
            drop(value);
            same(
                "dropped the value into_inner returned, then counted its drops",
                1,
                drops(5),
                "the value is dropped once, by its new owner",
            );
        },
    );
}
