//! The web app's words in Russian and English: message catalogues (`api/i18n/{ru,en}.txt`,
//! `key = text` lines), plural forms by each language's rules, numbers and dates.
//!
//! Every key a template or page uses must be in both catalogues; a unit test scans the
//! templates and the page modules and fails on a missing key, so a page can never show a raw key.
//! A key that is missing anyway (one made from data, say) shows as `…` and is logged.

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use cronbox_domain::channel::Language;

const RU: &str = include_str!("../../i18n/ru.txt");
const EN: &str = include_str!("../../i18n/en.txt");

type Catalogue = HashMap<&'static str, &'static str>;

fn parse(text: &'static str) -> Catalogue {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(" = ").map(|(k, v)| (k.trim(), v.trim())))
        .collect()
}

fn catalogue(lang: Language) -> &'static Catalogue {
    static RU_CAT: OnceLock<Catalogue> = OnceLock::new();
    static EN_CAT: OnceLock<Catalogue> = OnceLock::new();
    match lang {
        Language::Ru => RU_CAT.get_or_init(|| parse(RU)),
        Language::En => EN_CAT.get_or_init(|| parse(EN)),
    }
}

/// The plural category of `n` in `lang` (CLDR's rules; see [`Language::plural`]).
pub fn plural(lang: Language, n: i64) -> &'static str {
    lang.plural(n)
}

/// Groups of three digits: `1 234 567` (a no-break space) in Russian, `1,234,567` in English.
pub fn number(lang: Language, n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let sep = match lang {
        Language::Ru => '\u{a0}',
        Language::En => ',',
    };
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(sep);
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

/// Words for one page in one language.
#[derive(Debug, Clone, Copy)]
pub struct Tr {
    pub lang: Language,
}

impl Tr {
    pub fn new(lang: Language) -> Self {
        Self { lang }
    }

    /// `ru` or `en`, for `<html lang>`.
    pub fn code(&self) -> &'static str {
        self.lang.as_str()
    }

    /// The text of `key`, if the catalogue has it (for keys made from data: error codes…).
    pub fn lookup(&self, key: &str) -> Option<&'static str> {
        catalogue(self.lang).get(key).copied()
    }

    /// The text of `key`.
    pub fn t(&self, key: &str) -> &'static str {
        match catalogue(self.lang).get(key) {
            Some(v) => v,
            None => {
                tracing::warn!(key, lang = self.lang.as_str(), "message missing from the catalogue");
                "…"
            }
        }
    }

    /// `key` with `{name}` placeholders filled in (the values are text; templates escape them).
    pub fn f(&self, key: &str, args: &[(&str, &str)]) -> String {
        let mut s = self.t(key).to_string();
        for (name, value) in args {
            s = s.replace(&format!("{{{name}}}"), value);
        }
        s
    }

    /// `key.<plural category>` for `n`, with `{n}` as the formatted number.
    pub fn n(&self, key: &str, n: impl std::borrow::Borrow<i64>) -> String {
        let n = *n.borrow();
        let full = format!("{key}.{}", plural(self.lang, n));
        self.t(&full).replace("{n}", &number(self.lang, n))
    }

    pub fn num(&self, n: impl std::borrow::Borrow<i64>) -> String {
        number(self.lang, *n.borrow())
    }

    /// A moment in zone `tz`, the zone shown: `1 дек. 2026, 03:00 MSK` / `1 Dec 2026, 03:00 MSK`.
    pub fn when(&self, at: DateTime<Utc>, tz: &str) -> String {
        let zone: Tz = tz.parse().unwrap_or(chrono_tz::Europe::Moscow);
        let local = at.with_timezone(&zone);
        let month = self.t(&format!("month.{}", local.format("%-m")));
        format!(
            "{} {} {}, {}",
            local.format("%-d"),
            month,
            local.format("%Y"),
            local.format("%H:%M:%S %Z")
        )
    }

    /// How far `at` is from `now` in words: `через 5 мин` / `in 5 min`, `3 ч назад` / `3 h ago`.
    pub fn relative(&self, at: DateTime<Utc>, now: DateTime<Utc>) -> String {
        let secs = (at - now).num_seconds();
        let abs = secs.unsigned_abs() as i64;
        let (n, unit) = match abs {
            0..=59 => (abs, "s"),
            60..=3599 => (abs / 60, "min"),
            3600..=86_399 => (abs / 3600, "h"),
            _ => (abs / 86_400, "d"),
        };
        if abs < 5 {
            return self.t("time.now").to_string();
        }
        let amount = self.n(&format!("unit.{unit}"), n);
        if secs > 0 {
            self.f("time.in", &[("span", &amount)])
        } else {
            self.f("time.ago", &[("span", &amount)])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of a catalogue, plural forms counted once (each language has its own forms).
    fn keys(text: &'static str) -> Vec<&'static str> {
        let mut k: Vec<_> = parse(text)
            .into_keys()
            .map(|k| {
                [".one", ".few", ".many", ".other"]
                    .iter()
                    .find_map(|s| k.strip_suffix(s))
                    .unwrap_or(k)
            })
            .collect();
        k.sort_unstable();
        k.dedup();
        k
    }

    #[test]
    fn both_catalogues_hold_the_same_keys() {
        let (ru, en) = (keys(RU), keys(EN));
        let only_ru: Vec<_> = ru.iter().filter(|k| !en.contains(k)).collect();
        let only_en: Vec<_> = en.iter().filter(|k| !ru.contains(k)).collect();
        assert!(only_ru.is_empty(), "missing in en.txt: {only_ru:?}");
        assert!(only_en.is_empty(), "missing in ru.txt: {only_en:?}");
        for lang in [RU, EN] {
            let lines = lang.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
            for l in lines {
                assert!(l.contains(" = "), "not a `key = text` line: {l}");
            }
        }
    }

    /// Every `t("…")`, `n("…", …)` and `f("…", …)` in the templates and page modules names a key
    /// of both catalogues (plural keys in every category of each language).
    #[test]
    fn every_key_in_use_is_in_both_catalogues() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["templates/app", "src/pages"] {
            for e in std::fs::read_dir(format!("{root}/{dir}")).expect("the directory") {
                files.push(e.expect("an entry").path());
            }
        }
        let mut used = 0;
        for path in files {
            let text = std::fs::read_to_string(&path).expect("a text file");
            for (call, plural) in [(".t(\"", false), (".f(\"", false), (".n(\"", true)] {
                for (i, _) in text.match_indices(call) {
                    let rest = &text[i + call.len()..];
                    let Some(end) = rest.find('"') else { continue };
                    let key = &rest[..end];
                    if key.contains('{') || key.is_empty() {
                        continue; // built at run time (months, units): checked below
                    }
                    used += 1;
                    for lang in [Language::Ru, Language::En] {
                        let cats: &[&str] = match (plural, lang) {
                            (false, _) => &[""],
                            (true, Language::Ru) => &[".one", ".few", ".many"],
                            (true, Language::En) => &[".one", ".other"],
                        };
                        for c in cats {
                            let k = format!("{key}{c}");
                            assert!(
                                catalogue(lang).contains_key(k.as_str()),
                                "{}: key {k} missing in {}.txt",
                                path.display(),
                                lang.as_str()
                            );
                        }
                    }
                }
            }
        }
        assert!(
            used > 50,
            "the scan found only {used} keys: is it looking in the right place?"
        );
        for lang in [Language::Ru, Language::En] {
            let tr = Tr::new(lang);
            for m in 1..=12 {
                assert!(catalogue(lang).contains_key(format!("month.{m}").as_str()));
            }
            for u in ["s", "min", "h", "d"] {
                tr.n(&format!("unit.{u}"), 2);
                assert!(catalogue(lang).contains_key(format!("unit.{u}.one").as_str()));
            }
        }
    }

    #[test]
    fn russian_plurals_follow_the_cldr_rules() {
        let cases = [
            (1, "one"),
            (21, "one"),
            (101, "one"),
            (2, "few"),
            (4, "few"),
            (23, "few"),
            (5, "many"),
            (11, "many"),
            (12, "many"),
            (14, "many"),
            (111, "many"),
            (0, "many"),
        ];
        for (n, cat) in cases {
            assert_eq!(plural(Language::Ru, n), cat, "{n}");
        }
        assert_eq!(plural(Language::En, 1), "one");
        assert_eq!(plural(Language::En, 0), "other");
        assert_eq!(plural(Language::En, 21), "other");
    }

    #[test]
    fn numbers_are_grouped_as_each_language_writes_them() {
        assert_eq!(number(Language::Ru, 1_234_567), "1\u{a0}234\u{a0}567");
        assert_eq!(number(Language::En, 1_234_567), "1,234,567");
        assert_eq!(number(Language::En, 999), "999");
        assert_eq!(number(Language::En, -1000), "-1,000");
    }

    #[test]
    fn a_moment_is_shown_in_the_zone_given_with_the_zone_named() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z").unwrap().to_utc();
        assert_eq!(
            Tr::new(Language::Ru).when(at, "Europe/Moscow"),
            "1 дек. 2026, 03:00:00 MSK"
        );
        assert_eq!(
            Tr::new(Language::En).when(at, "Asia/Yekaterinburg"),
            "1 Dec 2026, 05:00:00 +05"
        );
        let tr = Tr::new(Language::Ru);
        assert_eq!(tr.relative(at + chrono::Duration::minutes(5), at), "через 5 минут");
        assert_eq!(tr.relative(at - chrono::Duration::hours(2), at), "2 часа назад");
        assert_eq!(
            Tr::new(Language::En).relative(at - chrono::Duration::days(1), at),
            "1 day ago"
        );
    }
}
