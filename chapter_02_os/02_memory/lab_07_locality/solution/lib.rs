//! # Lab 07: cache locality
//!
//! The same arithmetic, three times over, on data laid out two ways: one
//! layout walks memory in order, the other jumps around. The answers are
//! identical; the speed is not, and `cargo bench` shows by how much.
//!
//! | part | fast layout / order | slow layout / order |
//! |---|---|---|
//! | [`Matrix`] | [`Matrix::sum_row_major`]: along the rows, as stored | [`Matrix::sum_col_major`]: down the columns, a stride of `cols` cells |
//! | particles | [`Particles`] (struct of arrays): one `Vec` per field | `&[Particle]` (array of structs): all fields of a particle together |
//! | lists | [`sum_vec`] over a slice | [`sum_linked_list`], [`IndexList`] in shuffled placement: one dependent load per item |
//!
//! ## Why layout matters
//!
//! The CPU never reads one byte from memory: it moves whole *cache lines*
//! of 64 bytes. A line that is fetched and then fully used costs one trip to
//! memory for 16 `u32`s; a line fetched for one `u32` and evicted before its
//! neighbours are needed costs the same trip for a sixteenth of the work. The
//! hardware *prefetcher* hides most of the trip when addresses advance in a
//! predictable pattern (sequential, or a small constant stride), and cannot
//! when the next address is only known once the current load has finished
//! (a linked list: pointer chasing).
//!
//! So every type here promises a layout, and the tests check the promise
//! through the API (`as_slice`, `row`, `xs`, `nodes`), not the timing:
//!
//! - A [`Matrix`] stores its cells in one `Vec<u32>` in **row-major** order:
//!   cell `(r, c)` lives at index `r * cols + c`.
//! - [`Particles`] stores each field in its own contiguous `Vec`, so summing
//!   one field reads only that field's bytes.
//! - An [`IndexList`] keeps its nodes in one `Vec`, linked by index, and lets
//!   the caller choose where each node is placed: in list order (sequential
//!   memory) or scattered (as a long-lived heap tends to scatter them).
//!
//! Sums of integers use `u64` with wrapping addition (a sum of `u32`s cannot
//! wrap below 2^32 cells). Sums of `f32` may add in any order: the tests use
//! whole numbers, whose sums are exact whatever the order.

use std::collections::LinkedList;

// ---------------------------------------------------------------------------
// Part 1: a matrix in one Vec, row-major
// ---------------------------------------------------------------------------

/// A `rows x cols` matrix of `u32`, stored in one `Vec` in row-major order.
///
/// One allocation instead of a `Vec<Vec<u32>>`: a vector of vectors puts
/// every row in its own heap block (somewhere), adds a pointer load per row,
/// and cannot be handed out as one slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    /// `rows * cols` cells: row 0 first, then row 1, ... The invariant every
    /// method relies on is `data.len() == rows * cols`.
    data: Vec<u32>,
}

impl Matrix {
    /// A `rows x cols` matrix of zeros. Either dimension may be 0.
    ///
    /// # Panics
    ///
    /// If `rows * cols` overflows `usize`, with a message containing
    /// `overflow` (never a wrapped, too small matrix).
    pub fn new(rows: usize, cols: usize) -> Matrix {
        // `checked_mul` so an absurd shape panics here with a clear message
        // instead of wrapping into a small allocation.
        let len = rows.checked_mul(cols).expect("rows * cols overflows usize");
        Matrix {
            rows,
            cols,
            data: vec![0; len],
        }
    }

    /// A `rows x cols` matrix whose cell `(r, c)` is `f(r, c)`. `f` is
    /// called once per cell, in row-major order.
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> u32) -> Matrix {
        let len = rows.checked_mul(cols).expect("rows * cols overflows usize");
        let mut data = Vec::with_capacity(len);
        // Filling in storage order writes memory sequentially, the cheap way.
        for r in 0..rows {
            for c in 0..cols {
                data.push(f(r, c));
            }
        }
        Matrix { rows, cols, data }
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Where cell `(r, c)` lives in [`Matrix::as_slice`]: `r * cols + c`.
    ///
    /// # Panics
    ///
    /// If `r >= rows` or `c >= cols`, with a message containing
    /// `out of bounds`. Checking `c` matters: `(0, cols)` would otherwise
    /// silently alias `(1, 0)`.
    pub fn index(&self, r: usize, c: usize) -> usize {
        assert!(
            r < self.rows && c < self.cols,
            "cell ({r}, {c}) is out of bounds for a {}x{} matrix",
            self.rows,
            self.cols
        );
        r * self.cols + c
    }

    /// The value of cell `(r, c)`. Panics like [`Matrix::index`].
    pub fn get(&self, r: usize, c: usize) -> u32 {
        self.data[self.index(r, c)]
    }

    /// Sets cell `(r, c)` to `value`. Panics like [`Matrix::index`].
    pub fn set(&mut self, r: usize, c: usize, value: u32) {
        let i = self.index(r, c);
        self.data[i] = value;
    }

    /// All `rows * cols` cells in storage (row-major) order.
    pub fn as_slice(&self) -> &[u32] {
        &self.data
    }

    /// Row `r` as a slice: `as_slice()[r * cols..(r + 1) * cols]`. Rows are
    /// contiguous in a row-major matrix, so this borrows, never copies.
    ///
    /// # Panics
    ///
    /// If `r >= rows`, with a message containing `out of bounds`.
    pub fn row(&self, r: usize) -> &[u32] {
        assert!(
            r < self.rows,
            "row {r} is out of bounds for a {}x{} matrix",
            self.rows,
            self.cols
        );
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// The sum of every cell, visiting them row by row: `(0, 0), (0, 1), ...`,
    /// which is storage order. Consecutive reads are 4 bytes apart, so each
    /// 64-byte cache line serves 16 of them, and the loop vectorises.
    pub fn sum_row_major(&self) -> u64 {
        let mut total: u64 = 0;
        for r in 0..self.rows {
            // One bounds check per row, then a plain slice loop.
            for &x in self.row(r) {
                total = total.wrapping_add(u64::from(x));
            }
        }
        total
    }

    /// The sum of every cell, visiting them column by column: `(0, 0),
    /// (1, 0), ...`. Consecutive reads are `cols * 4` bytes apart: every read
    /// touches a different cache line, and once the matrix outgrows the cache
    /// each line is evicted before the column loop comes back for its
    /// neighbours.
    pub fn sum_col_major(&self) -> u64 {
        let mut total: u64 = 0;
        for c in 0..self.cols {
            for r in 0..self.rows {
                // Indexing by hand is the point here: the stride is `cols`.
                total = total.wrapping_add(u64::from(self.data[r * self.cols + c]));
            }
        }
        total
    }
}

// ---------------------------------------------------------------------------
// Part 2: array of structs vs struct of arrays
// ---------------------------------------------------------------------------

/// One particle, as an object-oriented design would write it: 8 fields of
/// 4 bytes, 32 bytes in all, two particles per cache line.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Particle {
    pub x: f32,
    pub y: f32,
    pub z: f32,
    pub vx: f32,
    pub vy: f32,
    pub vz: f32,
    pub mass: f32,
    pub id: u32,
}

/// How many running sums the mass totals keep (see [`total_mass_aos`]).
const LANES: usize = 8;

/// Adds up the lanes of a mass total, then the leftover items.
fn finish_lanes(lanes: [f32; LANES], rest: impl Iterator<Item = f32>) -> f32 {
    lanes.iter().sum::<f32>() + rest.sum::<f32>()
}

/// The sum of the masses of `particles` (the order of the additions is not
/// part of the contract).
///
/// In an array of structs, reading one 4-byte field drags the other 28
/// bytes of each particle through the cache too: 1/8 of every line fetched
/// is used.
pub fn total_mass_aos(particles: &[Particle]) -> f32 {
    // Eight running sums rather than one: a float addition takes a few
    // cycles, and with a single accumulator each one waits for the last, so
    // the loop would measure the adder's latency instead of the memory.
    // `Particles::total_mass` adds in exactly the same order, so the two
    // results are bit-for-bit equal.
    let mut lanes = [0.0f32; LANES];
    let chunks = particles.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, p) in lanes.iter_mut().zip(chunk) {
            *lane += p.mass;
        }
    }
    finish_lanes(lanes, rest.iter().map(|p| p.mass))
}

/// Moves every particle by its velocity for `dt`: `x += vx * dt`, and the
/// same for `y` and `z`. Nothing else changes.
///
/// This touches 6 of the 8 fields, so an array of structs wastes little
/// here: the layout that wins depends on the access pattern.
pub fn advance_aos(particles: &mut [Particle], dt: f32) {
    for p in particles {
        p.x += p.vx * dt;
        p.y += p.vy * dt;
        p.z += p.vz * dt;
    }
}

/// The same particles as a struct of arrays: one contiguous `Vec` per field,
/// all of the same length; particle `i` is the `i`-th element of each.
///
/// This is how game engines (entity-component systems), columnar databases
/// (ClickHouse, Parquet, Arrow) and SIMD code store records: a pass over one
/// field reads only that field's bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Particles {
    // Invariant: every Vec has the same length, the number of particles.
    x: Vec<f32>,
    y: Vec<f32>,
    z: Vec<f32>,
    vx: Vec<f32>,
    vy: Vec<f32>,
    vz: Vec<f32>,
    mass: Vec<f32>,
    id: Vec<u32>,
}

impl Particles {
    /// No particles.
    pub fn new() -> Particles {
        Particles::default()
    }

    /// Converts an array of structs: particle `i` of the result is
    /// `particles[i]`.
    pub fn from_aos(particles: &[Particle]) -> Particles {
        let n = particles.len();
        // Reserve every column once, rather than letting eight Vecs grow
        // (and copy) in step.
        let mut soa = Particles {
            x: Vec::with_capacity(n),
            y: Vec::with_capacity(n),
            z: Vec::with_capacity(n),
            vx: Vec::with_capacity(n),
            vy: Vec::with_capacity(n),
            vz: Vec::with_capacity(n),
            mass: Vec::with_capacity(n),
            id: Vec::with_capacity(n),
        };
        for &p in particles {
            soa.push(p);
        }
        soa
    }

    /// Appends a particle: one value onto the end of each field's `Vec`.
    pub fn push(&mut self, p: Particle) {
        self.x.push(p.x);
        self.y.push(p.y);
        self.z.push(p.z);
        self.vx.push(p.vx);
        self.vy.push(p.vy);
        self.vz.push(p.vz);
        self.mass.push(p.mass);
        self.id.push(p.id);
    }

    /// The number of particles.
    pub fn len(&self) -> usize {
        self.id.len()
    }

    /// Whether there are no particles.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Particle `i`, gathered from the eight fields (eight different cache
    /// lines: the price a struct of arrays pays for whole-record access).
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn get(&self, i: usize) -> Particle {
        Particle {
            x: self.x[i],
            y: self.y[i],
            z: self.z[i],
            vx: self.vx[i],
            vy: self.vy[i],
            vz: self.vz[i],
            mass: self.mass[i],
            id: self.id[i],
        }
    }

    /// Every particle's `x`, contiguous: `xs()[i] == get(i).x`.
    pub fn xs(&self) -> &[f32] {
        &self.x
    }

    /// Every particle's `y`, contiguous.
    pub fn ys(&self) -> &[f32] {
        &self.y
    }

    /// Every particle's `z`, contiguous.
    pub fn zs(&self) -> &[f32] {
        &self.z
    }

    /// Every particle's `vx`, contiguous.
    pub fn vxs(&self) -> &[f32] {
        &self.vx
    }

    /// Every particle's `vy`, contiguous.
    pub fn vys(&self) -> &[f32] {
        &self.vy
    }

    /// Every particle's `vz`, contiguous.
    pub fn vzs(&self) -> &[f32] {
        &self.vz
    }

    /// Every particle's `mass`, contiguous.
    pub fn masses(&self) -> &[f32] {
        &self.mass
    }

    /// Every particle's `id`, contiguous.
    pub fn ids(&self) -> &[u32] {
        &self.id
    }

    /// The sum of the masses: [`total_mass_aos`] on this layout. Reads
    /// `4 * len()` bytes, all of them useful.
    pub fn total_mass(&self) -> f32 {
        // The same eight running sums as `total_mass_aos`; here the compiler
        // keeps them in one SIMD register.
        let mut lanes = [0.0f32; LANES];
        let chunks = self.mass.chunks_exact(LANES);
        let rest = chunks.remainder();
        for chunk in chunks {
            for (lane, &m) in lanes.iter_mut().zip(chunk) {
                *lane += m;
            }
        }
        finish_lanes(lanes, rest.iter().copied())
    }

    /// [`advance_aos`] on this layout: `x += vx * dt` for every particle,
    /// and the same for `y` and `z`.
    pub fn advance(&mut self, dt: f32) {
        // One field at a time: three passes, each over two contiguous
        // arrays, which the compiler turns into SIMD loops. `zip` lets it
        // drop the bounds checks.
        for (x, &v) in self.x.iter_mut().zip(&self.vx) {
            *x += v * dt;
        }
        for (y, &v) in self.y.iter_mut().zip(&self.vy) {
            *y += v * dt;
        }
        for (z, &v) in self.z.iter_mut().zip(&self.vz) {
            *z += v * dt;
        }
    }
}

// ---------------------------------------------------------------------------
// Part 3: Vec vs linked lists
// ---------------------------------------------------------------------------

/// The sum of `values` (wrapping on overflow). The baseline: sequential
/// reads, prefetched, vectorised.
pub fn sum_vec(values: &[u64]) -> u64 {
    values.iter().fold(0, |acc, &x| acc.wrapping_add(x))
}

/// The sum of `list` (wrapping on overflow). Every node of a
/// `std::collections::LinkedList` is its own heap allocation; to find node
/// `i + 1` the CPU must first load node `i`, so no two loads overlap.
pub fn sum_linked_list(list: &LinkedList<u64>) -> u64 {
    list.iter().fold(0, |acc, &x| acc.wrapping_add(x))
}

/// One node of an [`IndexList`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// The value stored in this node.
    pub value: u64,
    /// The slot (index into [`IndexList::nodes`]) of the next node, `None`
    /// for the last one.
    pub next: Option<usize>,
}

/// A singly linked list whose nodes live in one `Vec`, linked by index
/// rather than by pointer.
///
/// Where each node sits in memory is chosen at construction, which makes
/// the cost of pointer chasing measurable on its own: laid out in list
/// order, following `next` walks memory sequentially (and the prefetcher
/// keeps up); scattered, every step is a cache miss whose address is known
/// only when the previous miss returns. Arenas like this one (indices
/// instead of pointers) are also how Rust programs usually build graphs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexList {
    nodes: Vec<Node>,
    head: Option<usize>,
}

impl IndexList {
    /// A list holding `values` in order (`values[0]` first), whose `i`-th
    /// node is stored at slot `placement[i]` of [`IndexList::nodes`].
    ///
    /// `placement` = `0, 1, 2, ...` is the sequential layout; a shuffled
    /// permutation scatters the nodes.
    ///
    /// # Panics
    ///
    /// If `placement` is not a permutation of `0..values.len()` (wrong
    /// length, a slot out of range or used twice), with a message containing
    /// `placement`.
    pub fn with_placement(values: &[u64], placement: &[usize]) -> IndexList {
        let n = values.len();
        assert_eq!(
            placement.len(),
            n,
            "placement has {} slots for {n} values",
            placement.len()
        );
        // Fill every slot exactly once; `None` marks a slot not yet used.
        let mut slots: Vec<Option<Node>> = vec![None; n];
        for (i, (&value, &slot)) in values.iter().zip(placement).enumerate() {
            assert!(slot < n, "placement slot {slot} is out of range 0..{n}");
            assert!(slots[slot].is_none(), "placement uses slot {slot} twice");
            // Node i links to wherever node i + 1 is placed.
            let next = placement.get(i + 1).copied();
            slots[slot] = Some(Node { value, next });
        }
        IndexList {
            // Every slot is filled: n values went into n distinct slots.
            nodes: slots.into_iter().map(|s| s.expect("filled")).collect(),
            head: placement.first().copied(),
        }
    }

    /// A list holding `values` in order, stored in list order.
    pub fn sequential(values: &[u64]) -> IndexList {
        let placement: Vec<usize> = (0..values.len()).collect();
        IndexList::with_placement(values, &placement)
    }

    /// The slot of the first node, `None` for an empty list.
    pub fn head(&self) -> Option<usize> {
        self.head
    }

    /// The nodes in storage order (not list order).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The values in list order, following `next` from the head.
    pub fn to_vec(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut at = self.head;
        while let Some(slot) = at {
            let node = self.nodes[slot];
            out.push(node.value);
            at = node.next;
        }
        out
    }

    /// The sum of the values (wrapping on overflow), following `next` from
    /// the head: one dependent load per node.
    pub fn sum(&self) -> u64 {
        let mut total: u64 = 0;
        let mut at = self.head;
        while let Some(slot) = at {
            let node = &self.nodes[slot];
            total = total.wrapping_add(node.value);
            at = node.next;
        }
        total
    }
}
