//! `course.toml`: the one manifest of chapters, topics and labs.
//!
//! Folders follow from ids (`<chapter>/<topic>/<lab>`), so the manifest never
//! repeats a path. Everything else in the tool (status, verify, sync) reads
//! the course through [`Course`] and nothing else.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The whole course, in order.
#[derive(Debug, Deserialize)]
pub struct Course {
    pub title: String,
    #[serde(rename = "chapter", default)]
    pub chapters: Vec<Chapter>,
    /// The folder holding `course.toml` (filled in after parsing).
    #[serde(skip)]
    pub root: PathBuf,
}

#[derive(Debug, Deserialize)]
pub struct Chapter {
    pub id: String,
    pub title: String,
    #[serde(rename = "topic", default)]
    pub topics: Vec<Topic>,
}

#[derive(Debug, Deserialize)]
pub struct Topic {
    pub id: String,
    pub title: String,
    #[serde(rename = "lab", default)]
    pub labs: Vec<LabEntry>,
}

/// A lab as written in the manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabEntry {
    pub id: String,
    pub title: String,
    pub kind: Kind,
    pub status: Status,
    /// Tests allowed to pass on the untouched starter, each with its reason.
    #[serde(default)]
    pub starter_passes: Vec<StarterPass>,
    /// Where a server lab is measured by `cargo course bench`.
    #[serde(default)]
    pub bench: Option<BenchEntry>,
}

/// A lab's place in `cargo course bench`: which suite measures it, under
/// which name, running which binary. The binary is a server, except in the
/// http suite, which measures load generators (lab 36's client).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchEntry {
    /// The suite (`echo`, `chat`, `redis`, `http`): `bench::suite` knows its loads.
    pub suite: String,
    /// The server's name in the table and on the chart.
    pub name: String,
    /// The binary the lab builds.
    pub binary: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StarterPass {
    pub test: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Cli,
    Server,
    Library,
    Service,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cli => "cli",
            Kind::Server => "server",
            Kind::Library => "library",
            Kind::Service => "service",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ready,
    Planned,
}

/// A lab with everything the tool needs to find it.
#[derive(Debug, Clone)]
pub struct Lab {
    pub entry: LabEntry,
    /// 1-based position in the course (lab_01 is 1).
    pub number: usize,
    pub chapter_index: usize,
    pub chapter_title: String,
    pub topic_title: String,
    /// Absolute folder of the lab.
    pub dir: PathBuf,
    /// Folder relative to the course root, with `/` separators.
    pub rel: String,
}

impl Lab {
    pub fn id(&self) -> &str {
        &self.entry.id
    }

    pub fn is_ready(&self) -> bool {
        self.entry.status == Status::Ready
    }

    /// The cargo package name: by convention the lab id.
    pub fn package(&self) -> &str {
        &self.entry.id
    }

    /// The short name after the number: `mini_cat` for `lab_01_mini_cat`.
    pub fn short_name(&self) -> &str {
        self.id().splitn(3, '_').nth(2).unwrap_or(self.id())
    }
}

impl Course {
    /// Reads `course.toml` from `root`.
    pub fn load(root: &Path) -> Result<Course> {
        let path = root.join("course.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut course = Course::parse(&text)
            .with_context(|| format!("{} is not a valid course manifest", path.display()))?;
        course.root = root.to_path_buf();
        Ok(course)
    }

    /// Parses and checks the manifest text: ids unique and numbered in order.
    pub fn parse(text: &str) -> Result<Course> {
        let course: Course = toml::from_str(text)?;
        let mut seen = std::collections::HashSet::new();
        for (i, lab) in course.lab_entries().enumerate() {
            if !seen.insert(lab.id.clone()) {
                bail!("lab `{}` is listed twice", lab.id);
            }
            let expected = format!("lab_{:02}_", i + 1);
            if !lab.id.starts_with(&expected) {
                bail!(
                    "lab `{}` is number {} in the manifest, so its id must start with `{expected}`",
                    lab.id,
                    i + 1
                );
            }
        }
        Ok(course)
    }

    fn lab_entries(&self) -> impl Iterator<Item = &LabEntry> {
        self.chapters
            .iter()
            .flat_map(|c| c.topics.iter().flat_map(|t| t.labs.iter()))
    }

    /// Every lab, in course order.
    pub fn labs(&self) -> Vec<Lab> {
        let mut labs = Vec::new();
        for (ci, chapter) in self.chapters.iter().enumerate() {
            for topic in &chapter.topics {
                for entry in &topic.labs {
                    let rel = format!("{}/{}/{}", chapter.id, topic.id, entry.id);
                    labs.push(Lab {
                        entry: entry.clone(),
                        number: labs.len() + 1,
                        chapter_index: ci + 1,
                        chapter_title: chapter.title.clone(),
                        topic_title: topic.title.clone(),
                        dir: self.root.join(&rel),
                        rel,
                    });
                }
            }
        }
        labs
    }

    /// The labs that are built (not `planned`).
    pub fn ready_labs(&self) -> Vec<Lab> {
        self.labs().into_iter().filter(Lab::is_ready).collect()
    }

    /// Finds a lab by what a learner types: `lab_01_mini_cat`, `lab_01`,
    /// `01`, `1` or `mini_cat`. An unknown name is an error that lists the
    /// closest lab ids.
    pub fn find(&self, query: &str) -> Result<Lab> {
        let labs = self.labs();
        let q = query.trim().trim_end_matches('/');
        // A path such as `chapter_01_foundation/01_rust_fundamentals/lab_01_mini_cat`.
        let q = q.rsplit('/').next().unwrap_or(q);
        let by_number = q
            .strip_prefix("lab_")
            .unwrap_or(q)
            .split('_')
            .next()
            .and_then(|n| n.parse::<usize>().ok());
        let found = labs.iter().find(|l| {
            l.id() == q
                || l.short_name() == q
                || (by_number == Some(l.number) && (q.len() <= 6 || q.starts_with("lab_")))
        });
        match found {
            Some(lab) => Ok(lab.clone()),
            None => {
                let mut scored: Vec<(f64, &str)> = labs
                    .iter()
                    .map(|l| {
                        let s = strsim::jaro_winkler(q, l.id())
                            .max(strsim::jaro_winkler(q, l.short_name()));
                        (s, l.id())
                    })
                    .collect();
                scored.sort_by(|a, b| b.0.total_cmp(&a.0));
                let close: Vec<&str> = scored.iter().take(3).map(|(_, id)| *id).collect();
                bail!(
                    "no lab called `{query}`; did you mean {}? (a lab is named by its id, number or short name: `lab_01_mini_cat`, `01`, `mini_cat`)",
                    close.join(", ")
                )
            }
        }
    }
}

/// Where the root README holds the status sentence that
/// [`Course::status_sentence`] writes; `verify` checks it is current.
pub const STATUS_START: &str =
    "<!-- status: written from course.toml, checked by `cargo course verify` -->";
pub const STATUS_END: &str = "<!-- /status -->";

impl Course {
    /// One sentence on how far the course is built, from the manifest
    /// alone: "Chapters 1 to 3 are ready; chapter 4 has 2 of its 5 labs
    /// ready; chapters 5 and 6 are planned." and what planned means. The
    /// root README carries it between [`STATUS_START`] and [`STATUS_END`].
    pub fn status_sentence(&self) -> String {
        let mut ready = Vec::new();
        let mut partial = Vec::new();
        let mut planned = Vec::new();
        let mut n = 0;
        for (i, ch) in self.chapters.iter().enumerate() {
            let labs: Vec<&LabEntry> = ch.topics.iter().flat_map(|t| &t.labs).collect();
            let built = labs.iter().filter(|l| l.status == Status::Ready).count();
            let first = n + 1;
            n += labs.len();
            match built {
                b if b == labs.len() => ready.push(i + 1),
                0 => planned.push(i + 1),
                b => partial.push(format!(
                    "chapter {} has {b} of its {} labs ready (labs {first:02} to {n:02})",
                    i + 1,
                    labs.len()
                )),
            }
        }
        // Nothing left to build: no word on what "planned" means.
        if partial.is_empty() && planned.is_empty() {
            let [first, .., last] = ready.as_slice() else {
                return format!("Chapter 1 is ready: all {n} labs are built.");
            };
            return format!("Chapters {first} to {last} are ready: all {n} labs are built.");
        }
        let mut parts = Vec::new();
        if !ready.is_empty() {
            parts.push(format!("{} ready", chapters_phrase(&ready)));
        }
        parts.extend(partial);
        if !planned.is_empty() {
            parts.push(format!("{} planned", chapters_phrase(&planned)));
        }
        let mut first = parts.join("; ");
        if let Some(c) = first.get(..1) {
            first = c.to_uppercase() + &first[1..];
        }
        format!(
            "{first}. Labs not built yet are listed as *planned*, and `cargo course` shows them as such."
        )
    }
}

/// "chapter 2 is", "chapters 1 to 3 are", "chapters 1, 3 and 5 are".
fn chapters_phrase(numbers: &[usize]) -> String {
    match numbers {
        [one] => format!("chapter {one} is"),
        [first, .., last] if last - first + 1 == numbers.len() && numbers.len() > 2 => {
            format!("chapters {first} to {last} are")
        }
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(usize::to_string).collect();
            format!("chapters {} and {last} are", init.join(", "))
        }
        [] => String::new(),
    }
}

/// The status sentence the README holds now (between the markers, with
/// line breaks folded), or `None` when the markers are missing.
pub fn readme_status(readme: &str) -> Option<String> {
    let start = readme.find(STATUS_START)? + STATUS_START.len();
    let end = start + readme[start..].find(STATUS_END)?;
    Some(
        readme[start..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Finds the course root: the nearest folder upwards from `start` that holds
/// `course.toml`.
pub fn find_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|d| d.join("course.toml").is_file())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
title = "t"
[[chapter]]
id = "chapter_01_foundation"
title = "Foundation"
[[chapter.topic]]
id = "01_rust"
title = "Rust"
[[chapter.topic.lab]]
id = "lab_01_mini_cat"
title = "cat"
kind = "cli"
status = "ready"
starter_passes = [{ test = "test_09_x", reason = "because" }]
[[chapter.topic.lab]]
id = "lab_02_parallel_sum"
title = "sum"
kind = "library"
status = "planned"
"#;

    fn sample() -> Course {
        let mut c = Course::parse(SAMPLE).unwrap();
        c.root = PathBuf::from("/r");
        c
    }

    #[test]
    fn parses_labs_in_order_with_their_folders() {
        let c = sample();
        let labs = c.labs();
        assert_eq!(labs.len(), 2);
        assert_eq!(labs[0].rel, "chapter_01_foundation/01_rust/lab_01_mini_cat");
        assert_eq!(
            labs[0].dir,
            PathBuf::from("/r/chapter_01_foundation/01_rust/lab_01_mini_cat")
        );
        assert_eq!(labs[0].entry.starter_passes[0].test, "test_09_x");
        assert_eq!(labs[1].number, 2);
        assert_eq!(c.ready_labs().len(), 1);
    }

    #[test]
    fn finds_a_lab_by_id_number_or_short_name() {
        let c = sample();
        for q in [
            "lab_01_mini_cat",
            "lab_01",
            "01",
            "1",
            "mini_cat",
            "lab_01_mini_cat/",
        ] {
            assert_eq!(c.find(q).unwrap().id(), "lab_01_mini_cat", "query {q}");
        }
        assert_eq!(c.find("2").unwrap().id(), "lab_02_parallel_sum");
    }

    #[test]
    fn an_unknown_lab_lists_close_matches() {
        let err = sample().find("mini_kat").unwrap_err().to_string();
        assert!(err.contains("no lab called `mini_kat`"), "{err}");
        assert!(err.contains("lab_01_mini_cat"), "{err}");
        assert!(sample().find("99").is_err());
    }

    #[test]
    fn rejects_misnumbered_and_duplicate_labs() {
        let bad = SAMPLE.replace("lab_02_parallel_sum", "lab_05_parallel_sum");
        assert!(
            Course::parse(&bad)
                .unwrap_err()
                .to_string()
                .contains("lab_02_")
        );
        let unknown = SAMPLE.replace("kind = \"cli\"", "kind = \"gui\"");
        assert!(Course::parse(&unknown).is_err());
    }

    #[test]
    fn the_status_sentence_names_ready_partial_and_planned_chapters() {
        let c = sample();
        assert_eq!(
            c.status_sentence(),
            "Chapter 1 has 1 of its 2 labs ready (labs 01 to 02). Labs not built yet are listed as *planned*, and `cargo course` shows them as such."
        );
        let mut done = sample();
        for l in done
            .chapters
            .iter_mut()
            .flat_map(|c| &mut c.topics)
            .flat_map(|t| &mut t.labs)
        {
            l.status = Status::Ready;
        }
        assert_eq!(
            done.status_sentence(),
            "Chapter 1 is ready: all 2 labs are built."
        );
        assert_eq!(chapters_phrase(&[1, 2, 3]), "chapters 1 to 3 are");
        assert_eq!(chapters_phrase(&[5, 6]), "chapters 5 and 6 are");
        assert_eq!(chapters_phrase(&[1, 3, 5]), "chapters 1, 3 and 5 are");
        let readme = format!("x\n{STATUS_START}\nA  b\nc.\n{STATUS_END}\n");
        assert_eq!(readme_status(&readme).as_deref(), Some("A b c."));
        assert_eq!(readme_status("no markers"), None);
    }

    // The README's status sentence is the one course.toml gives: it cannot go stale.
    #[test]
    fn the_real_readme_states_the_manifests_status() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let course = Course::load(root).unwrap();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        assert_eq!(
            readme_status(&readme).as_deref(),
            Some(course.status_sentence().as_str()),
            "put the expected sentence between the status markers of README.md"
        );
    }

    #[test]
    fn the_real_manifest_lists_all_36_labs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let course = Course::load(root).unwrap();
        assert_eq!(course.labs().len(), 36);
        assert_eq!(course.chapters.len(), 6);
    }
}
