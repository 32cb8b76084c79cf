//! Name matching shared by the crates: wildcard hostnames, and the closest known word to a
//! misspelled one.

/// `*.example.com` (stored as the suffix `.example.com`) matches `a.example.com` and
/// `a.b.example.com`, never `example.com`.
pub fn wildcard_matches(suffix: &str, host: &str) -> bool {
    host.len() > suffix.len() && host.ends_with(suffix)
}

/// The word of `known` closest to `word` (case aside), if at most `max` edits away.
pub fn closest<'a>(
    word: &str,
    known: impl Iterator<Item = &'a str>,
    max: usize,
) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    known
        .map(|k| (k, edit_distance(&k.to_ascii_lowercase(), &lower)))
        .filter(|(_, d)| *d <= max)
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| k)
}

/// Levenshtein distance of two short ASCII strings.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
