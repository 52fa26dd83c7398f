//! The grader for lab 07, cache locality.
//!
//! Nothing here is timed: speed belongs to `cargo bench`. What the tests
//! check is what the speed depends on, through the API each type exposes:
//! results (every sum is compared with one the test computes itself) and
//! *layouts* (a matrix is row-major, `as_slice()[r * cols + c]` is cell
//! `(r, c)`; a struct of arrays hands out one contiguous slice per field; an
//! index list puts node `i` where the caller asked).
//!
//! Every call into the library runs under `labkit::wait::within`, so a
//! loop that never ends (a linked list that cycles) fails in seconds with a
//! message instead of hanging the run.

use std::collections::LinkedList;
use std::fmt::Debug;
use std::time::Duration;

use labkit::Report;
use labkit::report::same;
use labkit::wait::try_within;
use locality::{
    IndexList, Matrix, Node, Particle, Particles, advance_aos, sum_linked_list, sum_vec,
    total_mass_aos,
};

/// How long one library call may take: the largest inputs here are a few
/// hundred thousand items, milliseconds of work even in a debug build.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Runs `f` under the watchdog and fails the test, saying what was called,
/// if it panicked.
#[track_caller]
fn call<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    match try_within(DEADLINE, what, f) {
        Ok(v) => v,
        Err(msg) => Report::new(format!("called {what}"))
            .expected("it to return")
            .got(format!("a panic: {msg}"))
            .hint("`not yet implemented` is a todo!() still to replace; otherwise read the panic message")
            .fail(),
    }
}

/// A cell value that differs for every cell of a small matrix and shows
/// where it came from: `100 * r + c`, so 203 is row 2, column 3.
fn cell(r: usize, c: usize) -> u32 {
    (100 * r + c) as u32
}

/// The row-major cells of `from_fn(rows, cols, cell)`, computed here.
fn row_major_cells(rows: usize, cols: usize) -> Vec<u32> {
    let mut v = Vec::new();
    for r in 0..rows {
        for c in 0..cols {
            v.push(cell(r, c));
        }
    }
    v
}

/// Describes where a row-major slice went wrong, and why it probably did.
fn layout_hint(rows: usize, cols: usize, got: &[u32]) -> String {
    let mut col_major = Vec::new();
    for c in 0..cols {
        for r in 0..rows {
            col_major.push(cell(r, c));
        }
    }
    if got == col_major.as_slice() {
        "the cells are stored column by column: cell (r, c) must live at r * cols + c (c * rows + r is the transposed, column-major layout)".into()
    } else {
        "cell (r, c) must live at index r * cols + c of as_slice(); from_fn must fill rows in order"
            .into()
    }
}

/// Shapes that tell `r * cols + c` from `c * rows + r` (non-square), plus a
/// square and the thin ones.
const SHAPES: [(usize, usize); 6] = [(3, 5), (5, 3), (1, 7), (7, 1), (4, 4), (2, 9)];

/// `len` particles whose fields all differ, each a whole number (exact in
/// `f32`), so any mix-up of fields or particles shows.
fn particles(len: usize) -> Vec<Particle> {
    (0..len)
        .map(|i| {
            let f = i as f32;
            Particle {
                x: f,
                y: 1000.0 + f,
                z: 2000.0 + f,
                vx: (i % 7) as f32 - 3.0,
                vy: (i % 5) as f32 + 1.0,
                vz: -((i % 3) as f32) - 1.0,
                mass: ((i * 37) % 101) as f32 + 1.0,
                id: 7_000_000 + i as u32,
            }
        })
        .collect()
}

/// Each field of `ps` as its own Vec, in the order of [`FIELDS`].
fn columns(ps: &[Particle]) -> Vec<Vec<f32>> {
    vec![
        ps.iter().map(|p| p.x).collect(),
        ps.iter().map(|p| p.y).collect(),
        ps.iter().map(|p| p.z).collect(),
        ps.iter().map(|p| p.vx).collect(),
        ps.iter().map(|p| p.vy).collect(),
        ps.iter().map(|p| p.vz).collect(),
        ps.iter().map(|p| p.mass).collect(),
    ]
}

/// The accessor names, in the order of [`columns`] (and `ids()` last).
const FIELDS: [&str; 7] = ["xs", "ys", "zs", "vxs", "vys", "vzs", "masses"];

/// The seven `f32` slices of a struct of arrays, in the order of [`FIELDS`].
fn soa_columns(soa: &Particles) -> Vec<&[f32]> {
    vec![
        soa.xs(),
        soa.ys(),
        soa.zs(),
        soa.vxs(),
        soa.vys(),
        soa.vzs(),
        soa.masses(),
    ]
}

/// A deterministic permutation of `0..len` (Fisher-Yates on SplitMix64).
fn shuffled(len: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut v: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// Checks that calling `f` panics with a message containing `needle`.
#[track_caller]
fn check_panics<T: Debug + Send + 'static>(
    what: &str,
    needle: &str,
    hint: &str,
    f: impl FnOnce() -> T + Send + 'static,
) {
    match try_within(DEADLINE, what, f) {
        Ok(v) => Report::new(format!("called {what}"))
            .expected(format!("a panic whose message contains {needle:?}"))
            .got(format!("it returned {v:?}"))
            .hint(hint)
            .fail(),
        Err(msg) if !msg.contains(needle) => Report::new(format!("called {what}"))
            .expected(format!("a panic whose message contains {needle:?}"))
            .got(format!("a panic: {msg}"))
            .hint(format!(
                "panic with a message that says {needle:?} (todo!() panics too: `not yet implemented`)"
            ))
            .fail(),
        Err(_) => {}
    }
}

// ---------------------------------------------------------------------------
// Part 1: Matrix
// ---------------------------------------------------------------------------

// A new matrix has the shape it was given and all zeros; from_fn puts f(r, c)
// in cell (r, c); empty shapes are allowed.
#[test]
fn test_01_matrix_new_and_from_fn_build_the_cells() {
    for (rows, cols) in SHAPES.into_iter().chain([(0, 0), (0, 4), (4, 0)]) {
        let what = format!("Matrix::new({rows}, {cols})");
        let (r, c, cells) = call(&what, move || {
            let m = Matrix::new(rows, cols);
            (m.rows(), m.cols(), m.as_slice().to_vec())
        });
        same(
            &format!("called {what}, then rows() and cols()"),
            (rows, cols),
            (r, c),
            "store the shape you were given",
        );
        same(
            &format!("called {what}, then as_slice()"),
            vec![0u32; rows * cols],
            cells,
            "a new matrix holds rows * cols zeros",
        );

        let what = format!("Matrix::from_fn({rows}, {cols}, |r, c| 100 * r + c) then get(r, c)");
        let got = call(&what, move || {
            let m = Matrix::from_fn(rows, cols, cell);
            let mut got = Vec::new();
            for r in 0..rows {
                for c in 0..cols {
                    got.push(((r, c), m.get(r, c)));
                }
            }
            got
        });
        for ((r, c), v) in got {
            same(
                &format!("called {what}, for cell ({r}, {c})"),
                cell(r, c),
                v,
                "get(r, c) must return what f(r, c) returned when the matrix was built",
            );
        }
    }
}

// index(r, c) is r * cols + c: the row-major layout every other part relies
// on (the transposed c * rows + r only looks right on a square matrix).
#[test]
fn test_02_matrix_index_is_r_times_cols_plus_c() {
    for (rows, cols) in SHAPES {
        let what = format!("Matrix::new({rows}, {cols}) then index(r, c) for every cell");
        let got = call(&what, move || {
            let m = Matrix::new(rows, cols);
            let mut got = Vec::new();
            for r in 0..rows {
                for c in 0..cols {
                    got.push(((r, c), m.index(r, c)));
                }
            }
            got
        });
        for ((r, c), i) in got {
            let hint = if i == c * rows + r {
                "that is c * rows + r, the column-major (transposed) layout: a row-major matrix keeps each row contiguous, so (r, c) is at r * cols + c"
            } else {
                "in a row-major matrix, row r starts at r * cols and cell (r, c) is c cells further"
            };
            same(
                &format!("called {what}, for cell ({r}, {c})"),
                r * cols + c,
                i,
                hint,
            );
        }
    }
}

// as_slice() shows the storage: rows * cols cells, row 0 first, so cell
// (r, c) is as_slice()[r * cols + c].
#[test]
fn test_03_matrix_as_slice_is_row_major() {
    for (rows, cols) in SHAPES.into_iter().chain([(0, 3), (3, 0)]) {
        let what = format!("Matrix::from_fn({rows}, {cols}, |r, c| 100 * r + c).as_slice()");
        let got = call(&what, move || {
            Matrix::from_fn(rows, cols, cell).as_slice().to_vec()
        });
        let expected = row_major_cells(rows, cols);
        if got != expected {
            Report::new(format!("called {what}"))
                .expected(format!("{expected:?} (row 0, then row 1, ...)"))
                .got(format!("{got:?}"))
                .hint(layout_hint(rows, cols, &got))
                .fail();
        }
    }
}

// row(r) borrows row r straight out of the storage: the same memory as
// as_slice()[r * cols..], not a copy.
#[test]
fn test_04_matrix_row_borrows_a_contiguous_row() {
    for (rows, cols) in SHAPES {
        let what = format!("Matrix::from_fn({rows}, {cols}, |r, c| 100 * r + c) then row(r)");
        let got = call(&what, move || {
            let m = Matrix::from_fn(rows, cols, cell);
            let base = m.as_slice().as_ptr() as usize;
            (0..rows)
                .map(|r| {
                    let row = m.row(r);
                    (row.to_vec(), row.as_ptr() as usize - base)
                })
                .collect::<Vec<_>>()
        });
        for (r, (values, offset)) in got.into_iter().enumerate() {
            let expected: Vec<u32> = (0..cols).map(|c| cell(r, c)).collect();
            same(
                &format!("called {what}, for row {r}: its values"),
                expected,
                values,
                "row r holds cells (r, 0), (r, 1), ... (r, cols - 1)",
            );
            same(
                &format!(
                    "called {what}, for row {r}: its address, in bytes after as_slice().as_ptr()"
                ),
                r * cols * 4,
                offset,
                "row(r) should borrow &as_slice()[r * cols..(r + 1) * cols], not build a new Vec",
            );
        }
    }
}

// set(r, c, v) changes exactly cell (r, c), at as_slice()[r * cols + c].
#[test]
fn test_05_matrix_set_writes_exactly_one_cell() {
    for (rows, cols) in SHAPES {
        for (r, c) in [
            (0, 0),
            (rows - 1, cols - 1),
            (rows / 2, cols - 1),
            (rows - 1, 0),
        ] {
            let what = format!(
                "Matrix::from_fn({rows}, {cols}, |r, c| 100 * r + c) then set({r}, {c}, 4242)"
            );
            let (got, read_back) = call(&what, move || {
                let mut m = Matrix::from_fn(rows, cols, cell);
                m.set(r, c, 4242);
                (m.as_slice().to_vec(), m.get(r, c))
            });
            let mut expected = row_major_cells(rows, cols);
            expected[r * cols + c] = 4242;
            same(
                &format!("called {what}, then as_slice()"),
                expected,
                got,
                "set(r, c, v) writes index(r, c) = r * cols + c, and nothing else",
            );
            same(
                &format!("called {what}, then get({r}, {c})"),
                4242,
                read_back,
                "get and set must agree on where a cell lives",
            );
        }
    }
}

// A cell outside the matrix panics instead of aliasing another cell:
// without a column check, (0, cols) would be (1, 0).
#[test]
fn test_06_matrix_rejects_cells_out_of_bounds() {
    // First, the last cell in bounds works.
    let last = call("Matrix::new(3, 5).index(2, 4)", || {
        Matrix::new(3, 5).index(2, 4)
    });
    same(
        "called Matrix::new(3, 5).index(2, 4)",
        14,
        last,
        "the last cell of a 3x5 matrix is at 2 * 5 + 4",
    );
    let hint = "check r < rows and c < cols, and panic with a message containing \"out of bounds\"";
    check_panics(
        "Matrix::new(3, 5).index(0, 5)",
        "out of bounds",
        "column 5 of a 5-column matrix does not exist; 0 * 5 + 5 would silently read cell (1, 0)",
        || Matrix::new(3, 5).index(0, 5),
    );
    check_panics(
        "Matrix::new(3, 5).index(3, 0)",
        "out of bounds",
        hint,
        || Matrix::new(3, 5).index(3, 0),
    );
    check_panics(
        "Matrix::new(3, 5).get(1, 7)",
        "out of bounds",
        "get should go through index(r, c), which checks both coordinates",
        || Matrix::new(3, 5).get(1, 7),
    );
    check_panics(
        "Matrix::new(3, 5).set(2, 5, 1)",
        "out of bounds",
        "set should go through index(r, c), which checks both coordinates",
        || Matrix::new(3, 5).set(2, 5, 1),
    );
    check_panics("Matrix::new(3, 5).row(3)", "out of bounds", hint, || {
        Matrix::new(3, 5).row(3).to_vec()
    });
}

/// Checks one of the two sums on shapes from empty to large, with values
/// whose total exceeds `u32::MAX`.
fn check_matrix_sum(name: &str, sum: fn(&Matrix) -> u64) {
    let shapes = SHAPES.into_iter().chain([
        (0, 0),
        (0, 5),
        (5, 0),
        (1, 1),
        (64, 64),
        (300, 17),
        (17, 300),
    ]);
    for (rows, cols) in shapes {
        for big in [false, true] {
            let f = move |r: usize, c: usize| {
                if big {
                    u32::MAX - (r * 31 + c) as u32
                } else {
                    cell(r, c) + 1
                }
            };
            let mut expected: u64 = 0;
            for r in 0..rows {
                for c in 0..cols {
                    expected += u64::from(f(r, c));
                }
            }
            let values = if big {
                "u32::MAX - (31 * r + c)"
            } else {
                "100 * r + c + 1"
            };
            let what = format!("Matrix::from_fn({rows}, {cols}, |r, c| {values}).{name}()");
            let got = call(&what, move || sum(&Matrix::from_fn(rows, cols, f)));
            if got != expected {
                let last_col: u64 = (0..rows).map(|r| u64::from(f(r, cols - 1))).sum();
                let last_row: u64 = (0..cols).map(|c| u64::from(f(rows - 1, c))).sum();
                let hint = if got == expected - last_col {
                    "exactly the last column is missing: does the column loop run 0..cols?"
                } else if got == expected - last_row {
                    "exactly the last row is missing: does the row loop run 0..rows?"
                } else if got == expected & 0xffff_ffff {
                    "the total wrapped at 2^32: add the cells as u64"
                } else if got < expected {
                    "too small: are some cells never visited?"
                } else {
                    "too large: are some cells visited twice?"
                };
                Report::new(format!("called {what}"))
                    .expected(format!("{expected}"))
                    .got(format!("{got}"))
                    .hint(hint)
                    .fail();
            }
        }
    }
}

// sum_row_major adds every cell (as u64), whatever the shape.
#[test]
fn test_07_sum_row_major_adds_every_cell() {
    check_matrix_sum("sum_row_major", Matrix::sum_row_major);
}

// sum_col_major gives the same total, walking down the columns.
#[test]
fn test_08_sum_col_major_adds_every_cell() {
    check_matrix_sum("sum_col_major", Matrix::sum_col_major);
}

// ---------------------------------------------------------------------------
// Part 2: array of structs vs struct of arrays
// ---------------------------------------------------------------------------

// A struct of arrays keeps each field in its own contiguous slice of len n:
// xs()[i] is particle i's x, and no two field slices share memory.
#[test]
fn test_09_particles_store_each_field_contiguously() {
    for n in [1, 2, 37, 1000] {
        let what = format!("Particles::from_aos(&ps) with {n} particles, then its field slices");
        let (len, cols, ids, ranges) = call(&what, move || {
            let soa = Particles::from_aos(&particles(n));
            let cols: Vec<Vec<f32>> = soa_columns(&soa).iter().map(|s| s.to_vec()).collect();
            let mut ranges: Vec<(usize, usize)> = soa_columns(&soa)
                .iter()
                .map(|s| (s.as_ptr() as usize, s.as_ptr() as usize + 4 * s.len()))
                .collect();
            let ids = soa.ids();
            ranges.push((ids.as_ptr() as usize, ids.as_ptr() as usize + 4 * ids.len()));
            (soa.len(), cols, soa.ids().to_vec(), ranges)
        });
        same(
            &format!("called {what}: len()"),
            n,
            len,
            "one particle per item of the input",
        );
        let ps = particles(n);
        for ((name, want), got) in FIELDS.iter().zip(columns(&ps)).zip(cols) {
            if got.len() != n {
                Report::new(format!("called {what}: {name}()"))
                    .expected(format!("a slice of {n} values, one per particle"))
                    .got(format!("a slice of {} values", got.len()))
                    .hint("each field lives in its own Vec with exactly one value per particle (not interleaved with the other fields)")
                    .fail();
            }
            if got != want {
                let i = want.iter().zip(&got).position(|(a, b)| a != b).unwrap_or(0);
                Report::new(format!("called {what}: {name}()"))
                    .expected(format!("particle {i}'s value {} at index {i} (ps[{i}] = {:?})", want[i], ps[i]))
                    .got(format!("{}", got[i]))
                    .hint(format!("{name}()[i] must be particle i's value of that field, and {name}() must hold nothing else: is a value pushed onto the wrong field's Vec, or the wrong Vec returned?"))
                    .fail();
            }
        }
        let want_ids: Vec<u32> = ps.iter().map(|p| p.id).collect();
        same(
            &format!("called {what}: ids()"),
            want_ids,
            ids,
            "ids()[i] must be particle i's id",
        );
        let names: Vec<&str> = FIELDS.iter().copied().chain(["ids"]).collect();
        for a in 0..ranges.len() {
            for b in a + 1..ranges.len() {
                let (x, y) = (ranges[a], ranges[b]);
                if x.0 < y.1 && y.0 < x.1 {
                    Report::new(format!("called {what}: compared where {}() and {}() point", names[a], names[b]))
                        .expected("two separate stretches of memory, one per field")
                        .got(format!("they overlap: {:#x}..{:#x} and {:#x}..{:#x}", x.0, x.1, y.0, y.1))
                        .hint("a struct of arrays keeps one Vec per field; slices of one shared buffer must not overlap")
                        .fail();
                }
            }
        }
    }
}

// push appends one particle to every field, and get(i) gathers it back.
#[test]
fn test_10_particles_push_then_get_round_trips() {
    let (empty, was_empty) = call("Particles::new() then len() and is_empty()", || {
        let soa = Particles::new();
        (soa.len(), soa.is_empty())
    });
    same(
        "called Particles::new() then len() and is_empty()",
        (0, true),
        (empty, was_empty),
        "a new struct of arrays holds no particles",
    );
    let n = 50;
    let what = format!("Particles::new(), push(ps[i]) for {n} particles, then get(i)");
    let (len, is_empty, got) = call(&what, move || {
        let mut soa = Particles::new();
        for p in particles(n) {
            soa.push(p);
        }
        let got: Vec<Particle> = (0..n).map(|i| soa.get(i)).collect();
        (soa.len(), soa.is_empty(), got)
    });
    same(
        &format!("called {what}: len()"),
        n,
        len,
        "one particle per push",
    );
    same(
        &format!("called {what}: is_empty()"),
        false,
        is_empty,
        "is_empty() is len() == 0",
    );
    for (i, (want, got)) in particles(n).into_iter().zip(got).enumerate() {
        same(
            &format!("called {what}: get({i})"),
            want,
            got,
            "get(i) reads index i of every field's Vec; does push put each field into its own Vec?",
        );
    }
}

// Both layouts compute the same total mass (exact: the masses are whole
// numbers), for lengths around the sizes a loop might unroll by.
#[test]
fn test_11_total_mass_is_the_same_in_both_layouts() {
    for n in [0, 1, 7, 8, 9, 15, 16, 17, 1000, 100_003] {
        let expected: f32 = particles(n).iter().map(|p| p.mass as f64).sum::<f64>() as f32;
        let what = format!("total_mass_aos(&ps) with {n} particles");
        let aos = call(&what, move || total_mass_aos(&particles(n)));
        let hint =
            "add every particle's mass once: are the last few (n % your chunk size) left out?";
        same(&format!("called {what}"), expected, aos, hint);
        let what = format!("Particles::from_aos(&ps).total_mass() with {n} particles");
        let soa = call(&what, move || {
            Particles::from_aos(&particles(n)).total_mass()
        });
        same(&format!("called {what}"), expected, soa, hint);
    }
}

/// What `advance(dt)` must leave: positions moved, everything else as was.
fn advanced(ps: &[Particle], dt: f32) -> Vec<Particle> {
    ps.iter()
        .map(|p| Particle {
            x: p.x + p.vx * dt,
            y: p.y + p.vy * dt,
            z: p.z + p.vz * dt,
            ..*p
        })
        .collect()
}

/// Fails with the first particle that differs.
#[track_caller]
fn check_particles(what: &str, expected: &[Particle], got: &[Particle]) {
    same(
        &format!("called {what}: number of particles"),
        expected.len(),
        got.len(),
        "advance moves particles, it never adds or removes any",
    );
    if let Some(i) = expected.iter().zip(got).position(|(a, b)| a != b) {
        Report::new(format!("called {what}"))
            .expected(format!("particle {i} to be {:?}", expected[i]))
            .got(format!("{:?}", got[i]))
            .hint("x += vx * dt, y += vy * dt, z += vz * dt, for every particle; velocities, mass and id stay as they are")
            .fail();
    }
}

// advance_aos moves each position by velocity * dt and changes nothing else.
#[test]
fn test_12_advance_aos_moves_positions_by_velocity() {
    for (n, dt) in [(1, 1.0), (9, 0.5), (1000, 2.0)] {
        let what = format!("advance_aos(&mut ps, {dt}) with {n} particles");
        let got = call(&what, move || {
            let mut ps = particles(n);
            advance_aos(&mut ps, dt);
            ps
        });
        check_particles(&what, &advanced(&particles(n), dt), &got);
    }
}

// Particles::advance does the same on the struct of arrays.
#[test]
fn test_13_particles_advance_moves_positions_by_velocity() {
    for (n, dt) in [(1, 1.0), (9, 0.5), (1000, 2.0)] {
        let what =
            format!("Particles::from_aos(&ps).advance({dt}) with {n} particles, then get(i)");
        let got = call(&what, move || {
            let mut soa = Particles::from_aos(&particles(n));
            soa.advance(dt);
            (0..soa.len()).map(|i| soa.get(i)).collect::<Vec<_>>()
        });
        check_particles(&what, &advanced(&particles(n), dt), &got);
    }
}

// ---------------------------------------------------------------------------
// Part 3: Vec vs linked lists
// ---------------------------------------------------------------------------

// sum_vec and sum_linked_list add every value, wrapping at 2^64.
#[test]
fn test_14_sum_vec_and_sum_linked_list_add_every_value() {
    let cases: Vec<(&str, Vec<u64>, u64)> = vec![
        ("[]", vec![], 0),
        ("[5]", vec![5], 5),
        ("[1, 2, 3, 4]", vec![1, 2, 3, 4], 10),
        ("0..10_000", (0..10_000).collect(), 49_995_000),
        ("[u64::MAX, 2]", vec![u64::MAX, 2], 1),
    ];
    for (name, values, expected) in cases {
        let hint = if name.contains("MAX") {
            "add with wrapping_add: the sum is defined modulo 2^64"
        } else {
            "add every value exactly once"
        };
        let v = values.clone();
        let what = format!("sum_vec(&{name})");
        let got = call(&what, move || sum_vec(&v));
        same(&format!("called {what}"), expected, got, hint);
        let list: LinkedList<u64> = values.into_iter().collect();
        let what = format!("sum_linked_list(&LinkedList::from_iter({name}))");
        let got = call(&what, move || sum_linked_list(&list));
        same(&format!("called {what}"), expected, got, hint);
    }
}

/// Checks every slot of an index list against the placement.
#[track_caller]
fn check_layout(
    what: &str,
    values: &[u64],
    placement: &[usize],
    head: Option<usize>,
    nodes: &[Node],
) {
    same(
        &format!("called {what}: head()"),
        placement.first().copied(),
        head,
        "the head is the slot of node 0, placement[0]",
    );
    same(
        &format!("called {what}: nodes().len()"),
        values.len(),
        nodes.len(),
        "one slot per value",
    );
    for (i, (&value, &slot)) in values.iter().zip(placement).enumerate() {
        let expected = Node {
            value,
            next: placement.get(i + 1).copied(),
        };
        if nodes[slot] != expected {
            let hint = if nodes[i].value == value && i != slot {
                "node i sits at slot i: the placement was ignored; node i belongs at slot placement[i]"
            } else {
                "node i (value values[i]) belongs at slot placement[i], and its next is placement[i + 1] (None for the last)"
            };
            Report::new(format!("called {what}: nodes()[{slot}]"))
                .expected(format!("node {i} of the list: {expected:?}"))
                .got(format!("{:?}", nodes[slot]))
                .hint(hint)
                .fail();
        }
    }
}

// with_placement puts node i at slot placement[i], linked in list order;
// sequential() is the placement 0, 1, 2, ...
#[test]
fn test_15_index_list_puts_node_i_at_slot_placement_i() {
    let small: Vec<u64> = vec![10, 20, 30, 40, 50];
    let placement = vec![3, 0, 4, 1, 2];
    let cases: Vec<(Vec<u64>, Vec<usize>)> = vec![
        (small.clone(), placement),
        (small.clone(), vec![0, 1, 2, 3, 4]),
        (small, vec![4, 3, 2, 1, 0]),
        (vec![7], vec![0]),
        ((0..1000).map(|x| x * 3 + 1).collect(), shuffled(1000, 7)),
    ];
    for (values, placement) in cases {
        let what = if values.len() <= 8 {
            format!("IndexList::with_placement(&{values:?}, &{placement:?})")
        } else {
            format!(
                "IndexList::with_placement(&values, &placement) with {} values and a shuffled placement",
                values.len()
            )
        };
        let (v, p) = (values.clone(), placement.clone());
        let (head, nodes) = call(&what, move || {
            let list = IndexList::with_placement(&v, &p);
            (list.head(), list.nodes().to_vec())
        });
        check_layout(&what, &values, &placement, head, &nodes);
    }
    let values: Vec<u64> = vec![5, 6, 7, 8];
    let v = values.clone();
    let what = "IndexList::sequential(&[5, 6, 7, 8])";
    let (head, nodes) = call(what, move || {
        let list = IndexList::sequential(&v);
        (list.head(), list.nodes().to_vec())
    });
    check_layout(what, &values, &[0, 1, 2, 3], head, &nodes);
}

// Following next from the head visits the values in list order, whatever
// the placement; the sum adds every one, the empty list included.
#[test]
fn test_16_index_list_walks_and_sums_in_list_order() {
    let cases: Vec<(Vec<u64>, Vec<usize>)> = vec![
        (vec![10, 20, 30, 40, 50], vec![3, 0, 4, 1, 2]),
        (vec![1, 2], vec![1, 0]),
        (vec![9], vec![0]),
        (vec![], vec![]),
        ((0..10_000).map(|x| x * x).collect(), shuffled(10_000, 42)),
        (vec![u64::MAX, 3], vec![1, 0]),
    ];
    for (values, placement) in cases {
        let what = if values.len() <= 8 {
            format!("IndexList::with_placement(&{values:?}, &{placement:?})")
        } else {
            format!(
                "IndexList::with_placement(&values, &placement) with {} values and a shuffled placement",
                values.len()
            )
        };
        let (v, p) = (values.clone(), placement.clone());
        let (len, empty, walked, sum) = call(&what, move || {
            let list = IndexList::with_placement(&v, &p);
            (list.len(), list.is_empty(), list.to_vec(), list.sum())
        });
        same(
            &format!("called {what}: len() and is_empty()"),
            (values.len(), values.is_empty()),
            (len, empty),
            "one node per value",
        );
        if walked != values {
            let hint = if walked.len() + 1 == values.len() {
                "the last node is missing: the walk must visit the node whose next is None too"
            } else {
                "start at head() and follow each node's next until None"
            };
            Report::new(format!("called {what}: to_vec()"))
                .expected(format!(
                    "the values in list order, {} of them",
                    values.len()
                ))
                .got(format!(
                    "{} values{}",
                    walked.len(),
                    if walked.len() <= 8 {
                        format!(": {walked:?}")
                    } else {
                        String::new()
                    }
                ))
                .hint(hint)
                .fail();
        }
        let expected = values.iter().fold(0u64, |a, &x| a.wrapping_add(x));
        let hint = if values
            .last()
            .is_some_and(|&l| sum == expected.wrapping_sub(l))
        {
            "exactly the last value is missing: the walk must add the node whose next is None too"
        } else {
            "add every value once, with wrapping_add, following next from head()"
        };
        same(&format!("called {what}: sum()"), expected, sum, hint);
    }
}

// A placement that is not a permutation of 0..len would lose or overwrite
// nodes: with_placement refuses it.
#[test]
fn test_17_index_list_rejects_a_placement_that_is_not_a_permutation() {
    let ok = call(
        "IndexList::with_placement(&[1, 2, 3], &[2, 0, 1]).to_vec()",
        || IndexList::with_placement(&[1, 2, 3], &[2, 0, 1]).to_vec(),
    );
    same(
        "called IndexList::with_placement(&[1, 2, 3], &[2, 0, 1]).to_vec()",
        vec![1, 2, 3],
        ok,
        "a valid placement must work first",
    );
    let hint = "check that placement has one slot per value, each in 0..len and used once, and panic with a message containing \"placement\"";
    check_panics(
        "IndexList::with_placement(&[1, 2, 3], &[0, 1])",
        "placement",
        hint,
        || IndexList::with_placement(&[1, 2, 3], &[0, 1]).len(),
    );
    check_panics(
        "IndexList::with_placement(&[1, 2, 3], &[0, 1, 3])",
        "placement",
        hint,
        || IndexList::with_placement(&[1, 2, 3], &[0, 1, 3]).len(),
    );
    check_panics(
        "IndexList::with_placement(&[1, 2, 3], &[0, 2, 0])",
        "placement",
        "slot 0 is used twice (and slot 1 never): one node would overwrite another",
        || IndexList::with_placement(&[1, 2, 3], &[0, 2, 0]).len(),
    );
}

// A shape whose cell count overflows usize is refused with a panic, never
// wrapped into a tiny matrix that claims huge dimensions; empty shapes with a
// huge other dimension still work.
#[test]
fn test_18_matrix_new_rejects_a_shape_whose_size_overflows() {
    let half = usize::MAX / 2 + 1;
    let hint = "rows * cols wraps to 0 here: compute the cell count with checked_mul and panic with a message containing \"overflow\" when it is None";
    check_panics(
        &format!("Matrix::new({half}, 2)"),
        "overflow",
        hint,
        move || Matrix::new(half, 2),
    );
    check_panics(
        &format!("Matrix::new(2, {half})"),
        "overflow",
        hint,
        move || Matrix::new(2, half),
    );
    for (rows, cols) in [(1, 0), (0, usize::MAX)] {
        let what = format!("Matrix::new({rows}, {cols})");
        let (r, c, cells) = call(&what, move || {
            let m = Matrix::new(rows, cols);
            (m.rows(), m.cols(), m.as_slice().len())
        });
        same(
            &format!("called {what}, then rows(), cols(), as_slice().len()"),
            (rows, cols, 0),
            (r, c, cells),
            "a shape with a 0 dimension has no cells, whatever the other dimension: 0 * anything does not overflow",
        );
    }
}
