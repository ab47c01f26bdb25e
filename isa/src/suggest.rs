//! "Did you mean" suggestions: the closest of a set of names to a misspelt one, by edit
//! distance. Shared by the assembler (mnemonics, directives, labels), target names and the
//! command line (passes, dims, subcommand values).

/// Levenshtein distance, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a plausible typo (at most a
/// third of its length, 1 to 3 edits; a swap of adjacent characters is one edit). Candidates
/// whose length alone rules them out are skipped, so a suggestion costs little per candidate.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let w: Vec<char> = word.chars().collect();
    let limit = (w.len() / 3).clamp(1, 3);
    let first = w.first().copied();
    let mut rows = [Vec::new(), Vec::new(), Vec::new()];
    candidates
        .into_iter()
        .filter(|c| c.len() + limit >= w.len() && c.chars().count().abs_diff(w.len()) <= limit)
        .filter_map(|c| {
            let d = distance(&w, c, &mut rows);
            (d > 0 && d <= limit).then_some((d, c))
        })
        .min_by_key(|&(d, c)| (d, c.chars().next() != first, c))
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance of `a` (as characters) and `b`: Levenshtein with a swap of
/// two adjacent characters counted as one edit (`egde` is one edit from `edge`), in the caller's
/// row buffers.
fn distance(a: &[char], b: &str, rows: &mut [Vec<usize>; 3]) -> usize {
    let b: Vec<char> = b.chars().collect();
    let n = b.len();
    let [older, prev, cur] = rows;
    older.clear();
    prev.clear();
    prev.extend(0..=n);
    for (i, &ca) in a.iter().enumerate() {
        cur.clear();
        cur.push(i + 1);
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            let mut d = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
            if i > 0 && j > 0 && ca == b[j - 1] && a[i - 1] == cb {
                d = d.min(older[j - 1] + 1);
            }
            cur.push(d);
        }
        std::mem::swap(older, prev);
        std::mem::swap(prev, cur);
    }
    prev[n]
}

/// `word`, followed by ` (did you mean `X`?)` when one of `candidates` is a plausible typo of it.
pub fn did_you_mean<'a>(candidates: impl IntoIterator<Item = &'a str>, word: &str) -> String {
    match closest(word, candidates) {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_suggests_typos_only() {
        assert_eq!(closest("hlt", ["halt", "nop"]), Some("halt"));
        assert_eq!(closest("vpu.ad", ["vpu.add", "vpu.adds"]), Some("vpu.add"));
        assert_eq!(closest("zzzzzz", ["halt", "nop"]), None);
    }

    #[test]
    fn a_swap_of_adjacent_characters_is_one_edit() {
        assert_eq!(closest("egde", ["edge", "datacenter"]), Some("edge"));
        assert_eq!(
            closest("fuse-atention", ["fuse-attention", "fuse-norm"]),
            Some("fuse-attention")
        );
    }

    #[test]
    fn did_you_mean_is_empty_without_a_close_candidate() {
        assert_eq!(
            did_you_mean(["edge", "datacenter"], "egde"),
            "; did you mean `edge`?"
        );
        assert_eq!(did_you_mean(["edge", "datacenter"], "quantum"), "");
    }
}
