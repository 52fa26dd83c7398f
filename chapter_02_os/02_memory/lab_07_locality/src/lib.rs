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
//!
//! ## Your task
//!
//! Replace every `todo!()`; keep the signatures and the promised layouts,
//! they are what the tests call and check. The struct fields below are a
//! suggestion that keeps those promises; change them if you like. Run
//! `cargo test` in this folder to be graded, then *predict* which variant of
//! each pair is faster and by how much, and run `cargo bench` to find out
//! (README.md has the details and our numbers, hints.md a few hints).

#![allow(unused)]

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
        todo!("build the struct")
    }

    /// A `rows x cols` matrix whose cell `(r, c)` is `f(r, c)`. `f` is
    /// called once per cell, in row-major order.
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> u32) -> Matrix {
        todo!("call f(r, c) for every cell, in row-major order")
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        todo!("return the number of rows")
    }

    /// The number of columns.
    pub fn cols(&self) -> usize {
        todo!("return the number of columns")
    }

    /// Where cell `(r, c)` lives in [`Matrix::as_slice`]: `r * cols + c`.
    ///
    /// # Panics
    ///
    /// If `r >= rows` or `c >= cols`, with a message containing
    /// `out of bounds`. Checking `c` matters: `(0, cols)` would otherwise
    /// silently alias `(1, 0)`.
    pub fn index(&self, r: usize, c: usize) -> usize {
        todo!("check bounds, then r * cols + c")
    }

    /// The value of cell `(r, c)`. Panics like [`Matrix::index`].
    pub fn get(&self, r: usize, c: usize) -> u32 {
        todo!("read the cell at index(r, c)")
    }

    /// Sets cell `(r, c)` to `value`. Panics like [`Matrix::index`].
    pub fn set(&mut self, r: usize, c: usize, value: u32) {
        todo!("write the cell at index(r, c)")
    }

    /// All `rows * cols` cells in storage (row-major) order.
    pub fn as_slice(&self) -> &[u32] {
        todo!("every cell in storage order")
    }

    /// Row `r` as a slice: `as_slice()[r * cols..(r + 1) * cols]`. Rows are
    /// contiguous in a row-major matrix, so this borrows, never copies.
    ///
    /// # Panics
    ///
    /// If `r >= rows`, with a message containing `out of bounds`.
    pub fn row(&self, r: usize) -> &[u32] {
        todo!("the cells of row r, borrowed")
    }

    /// The sum of every cell, visiting them row by row: `(0, 0), (0, 1), ...`,
    /// which is storage order. Consecutive reads are 4 bytes apart, so each
    /// 64-byte cache line serves 16 of them, and the loop vectorises.
    pub fn sum_row_major(&self) -> u64 {
        todo!("add the cells row by row")
    }

    /// The sum of every cell, visiting them column by column: `(0, 0),
    /// (1, 0), ...`. Consecutive reads are `cols * 4` bytes apart: every read
    /// touches a different cache line, and once the matrix outgrows the cache
    /// each line is evicted before the column loop comes back for its
    /// neighbours.
    pub fn sum_col_major(&self) -> u64 {
        todo!("add the cells column by column")
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

/// The sum of the masses of `particles` (the order of the additions is not
/// part of the contract).
///
/// In an array of structs, reading one 4-byte field drags the other 28
/// bytes of each particle through the cache too: 1/8 of every line fetched
/// is used.
pub fn total_mass_aos(particles: &[Particle]) -> f32 {
    todo!("add up every particle's mass")
}

/// Moves every particle by its velocity for `dt`: `x += vx * dt`, and the
/// same for `y` and `z`. Nothing else changes.
///
/// This touches 6 of the 8 fields, so an array of structs wastes little
/// here: the layout that wins depends on the access pattern.
pub fn advance_aos(particles: &mut [Particle], dt: f32) {
    todo!("x += vx * dt, and the same for y and z")
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
        todo!("build the struct")
    }

    /// Converts an array of structs: particle `i` of the result is
    /// `particles[i]`.
    pub fn from_aos(particles: &[Particle]) -> Particles {
        todo!("one push per particle")
    }

    /// Appends a particle: one value onto the end of each field's `Vec`.
    pub fn push(&mut self, p: Particle) {
        todo!("one value onto each field's Vec")
    }

    /// The number of particles.
    pub fn len(&self) -> usize {
        todo!("the number of items")
    }

    /// Whether there are no particles.
    pub fn is_empty(&self) -> bool {
        todo!("whether there are no items")
    }

    /// Particle `i`, gathered from the eight fields (eight different cache
    /// lines: the price a struct of arrays pays for whole-record access).
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn get(&self, i: usize) -> Particle {
        todo!("gather particle i from every field")
    }

    /// Every particle's `x`, contiguous: `xs()[i] == get(i).x`.
    pub fn xs(&self) -> &[f32] {
        todo!("the x field, contiguous")
    }

    /// Every particle's `y`, contiguous.
    pub fn ys(&self) -> &[f32] {
        todo!("the y field, contiguous")
    }

    /// Every particle's `z`, contiguous.
    pub fn zs(&self) -> &[f32] {
        todo!("the z field, contiguous")
    }

    /// Every particle's `vx`, contiguous.
    pub fn vxs(&self) -> &[f32] {
        todo!("the vx field, contiguous")
    }

    /// Every particle's `vy`, contiguous.
    pub fn vys(&self) -> &[f32] {
        todo!("the vy field, contiguous")
    }

    /// Every particle's `vz`, contiguous.
    pub fn vzs(&self) -> &[f32] {
        todo!("the vz field, contiguous")
    }

    /// Every particle's `mass`, contiguous.
    pub fn masses(&self) -> &[f32] {
        todo!("the mass field, contiguous")
    }

    /// Every particle's `id`, contiguous.
    pub fn ids(&self) -> &[u32] {
        todo!("the id field, contiguous")
    }

    /// The sum of the masses: [`total_mass_aos`] on this layout. Reads
    /// `4 * len()` bytes, all of them useful. (Tip: add in the same order as
    /// your `total_mass_aos`, so the two agree to the last bit.)
    pub fn total_mass(&self) -> f32 {
        todo!("add up the mass field")
    }

    /// [`advance_aos`] on this layout: `x += vx * dt` for every particle,
    /// and the same for `y` and `z`.
    pub fn advance(&mut self, dt: f32) {
        todo!("x += vx * dt, one field at a time")
    }
}

// ---------------------------------------------------------------------------
// Part 3: Vec vs linked lists
// ---------------------------------------------------------------------------

/// The sum of `values` (wrapping on overflow). The baseline: sequential
/// reads, prefetched, vectorised.
pub fn sum_vec(values: &[u64]) -> u64 {
    todo!("add up the slice")
}

/// The sum of `list` (wrapping on overflow). Every node of a
/// `std::collections::LinkedList` is its own heap allocation; to find node
/// `i + 1` the CPU must first load node `i`, so no two loads overlap.
pub fn sum_linked_list(list: &LinkedList<u64>) -> u64 {
    todo!("add up the list")
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
        todo!("put node i at slot placement[i], linked in list order")
    }

    /// A list holding `values` in order, stored in list order.
    pub fn sequential(values: &[u64]) -> IndexList {
        todo!("the placement 0, 1, 2, ...")
    }

    /// The slot of the first node, `None` for an empty list.
    pub fn head(&self) -> Option<usize> {
        todo!("the slot of the first node")
    }

    /// The nodes in storage order (not list order).
    pub fn nodes(&self) -> &[Node] {
        todo!("the nodes in storage order")
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        todo!("the number of items")
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        todo!("whether there are no items")
    }

    /// The values in list order, following `next` from the head.
    pub fn to_vec(&self) -> Vec<u64> {
        todo!("follow next from the head")
    }

    /// The sum of the values (wrapping on overflow), following `next` from
    /// the head: one dependent load per node.
    pub fn sum(&self) -> u64 {
        todo!("follow next from the head, adding")
    }
}
