//! Any cron expression in words, in Russian or English: the console's description of a
//! schedule the builder's shapes ([`crate::cron_builder`]) do not cover, such as
//! `*/10 9-18 * * 1-5` ("по будням, раз в 10 минут с 09:00 по 18:59"). It reads the common
//! forms (lists, ranges, steps, names, `L` for the last day); for anything rarer (`15W`,
//! `5#3`, steps over days) it says nothing and the caller falls back to croner's English.

use crate::channel::Language;
use crate::cron_builder::{list, DAYS_EN, DAYS_RU};

/// One field: every value, every n-th (from `start`), or a set of values.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Any,
    Step {
        start: u32,
        step: u32,
    },
    Values(Vec<u32>),
    /// `L` in day-of-month.
    Last,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
/// "в январе" (prepositional) and "1 января" (genitive).
const MONTHS_RU_IN: [&str; 12] = [
    "январе",
    "феврале",
    "марте",
    "апреле",
    "мае",
    "июне",
    "июле",
    "августе",
    "сентябре",
    "октябре",
    "ноябре",
    "декабре",
];
const MONTHS_RU_OF: [&str; 12] = [
    "января",
    "февраля",
    "марта",
    "апреля",
    "мая",
    "июня",
    "июля",
    "августа",
    "сентября",
    "октября",
    "ноября",
    "декабря",
];
const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Sets larger than this are not spelled out.
const MAX_LISTED: usize = 8;

fn value(s: &str, names: &[&str], base: u32) -> Option<u32> {
    if let Ok(n) = s.parse::<u32>() {
        return Some(n);
    }
    let up = s.to_ascii_uppercase();
    names
        .iter()
        .position(|n| *n == up)
        .and_then(|i| u32::try_from(i).ok())
        .map(|i| i + base)
}

/// `field` within `min..=max`; month and weekday names by `names` (numbered from `base`).
fn parse(field: &str, min: u32, max: u32, names: &[&str], base: u32) -> Option<Field> {
    if field == "*" || field == "?" {
        return Some(Field::Any);
    }
    if let Some(step) = field.strip_prefix("*/") {
        let step = step.parse().ok().filter(|s| *s > 0)?;
        return Some(Field::Step { start: min, step });
    }
    let mut values = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().ok().filter(|s| *s > 0)?),
            None => (item, 1),
        };
        let (a, b) = match range.split_once('-') {
            Some((a, b)) => (value(a, names, base)?, value(b, names, base)?),
            None => {
                let v = value(range, names, base)?;
                (v, if step > 1 { max } else { v })
            }
        };
        if a < min || b > max || a > b {
            return None;
        }
        values.extend((a..=b).step_by(step as usize));
    }
    values.sort_unstable();
    values.dedup();
    Some(Field::Values(values))
}

fn hm(h: u32, m: u32) -> String {
    format!("{h:02}:{m:02}")
}

fn plural_ru(n: u32, one: &'static str, few: &'static str, many: &'static str) -> &'static str {
    match Language::Ru.plural(n.into()) {
        "one" => one,
        "few" => few,
        _ => many,
    }
}

/// The time of day, and whether it names exact times ("в 09:00") rather than a rhythm.
fn time_part(minute: &Field, hour: &Field, ru: bool) -> Option<(String, bool)> {
    let and = if ru { "и" } else { "and" };
    Some(match (minute, hour) {
        (Field::Any, Field::Any) => (
            if ru {
                "каждую минуту"
            } else {
                "every minute"
            }
            .into(),
            false,
        ),
        (Field::Step { start: 0, step }, Field::Any) => (
            if ru {
                format!("раз в {step} {}", plural_ru(*step, "минуту", "минуты", "минут"))
            } else {
                format!("every {step} minutes")
            },
            false,
        ),
        (Field::Values(m), Field::Any) if m.len() == 1 => (
            if ru {
                format!("каждый час, в :{:02}", m[0])
            } else {
                format!("every hour at :{:02}", m[0])
            },
            false,
        ),
        (Field::Values(m), Field::Step { start: 0, step }) if m.len() == 1 => (
            if ru {
                format!(
                    "раз в {step} {}, в :{:02}",
                    plural_ru(*step, "час", "часа", "часов"),
                    m[0]
                )
            } else {
                format!("every {step} hours at :{:02}", m[0])
            },
            false,
        ),
        (Field::Values(m), Field::Values(h)) if m.len() * h.len() <= MAX_LISTED => {
            let times: Vec<String> = h.iter().flat_map(|h| m.iter().map(move |m| hm(*h, *m))).collect();
            let times: Vec<&str> = times.iter().map(String::as_str).collect();
            (format!("{} {}", if ru { "в" } else { "at" }, list(&times, and)), true)
        }
        // A rhythm within hours that run on without a gap: "from 09:00 to 18:59".
        (Field::Any | Field::Step { start: 0, .. } | Field::Values(_), Field::Values(h))
            if h.windows(2).all(|w| w[1] == w[0] + 1) =>
        {
            let (first, last) = (*h.first()?, *h.last()?);
            let rhythm = match minute {
                Field::Any => if ru {
                    "каждую минуту"
                } else {
                    "every minute"
                }
                .to_string(),
                Field::Step { step, .. } => {
                    if ru {
                        format!("раз в {step} {}", plural_ru(*step, "минуту", "минуты", "минут"))
                    } else {
                        format!("every {step} minutes")
                    }
                }
                Field::Values(m) if m.len() == 1 => {
                    let at = format!(":{:02}", m[0]);
                    return Some((
                        if ru {
                            format!("каждый час в {at} с {} по {}", hm(first, m[0]), hm(last, m[0]))
                        } else {
                            format!("every hour at {at} from {} to {}", hm(first, m[0]), hm(last, m[0]))
                        },
                        false,
                    ));
                }
                _ => return None,
            };
            let (from, to) = (hm(first, 0), hm(last, 59));
            (
                if ru {
                    format!("{rhythm} с {from} по {to}")
                } else {
                    format!("{rhythm} from {from} to {to}")
                },
                false,
            )
        }
        _ => return None,
    })
}

fn ordinal_en(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// The days: of the month, of the week (or either, when both are restricted, as cron ORs them),
/// and the months.
fn day_part(dom: &Field, month: &Field, dow: &Field, ru: bool) -> Option<String> {
    let and = if ru { "и" } else { "and" };
    let or = if ru { "или" } else { "or" };
    let month_names = |m: &[u32], names: &[&'static str; 12]| -> Option<Vec<&'static str>> {
        m.iter()
            .map(|i| names.get(usize::try_from(*i).ok()?.checked_sub(1)?).copied())
            .collect()
    };
    // "1 января", "on January 1": one day of one month reads as a date.
    if let (Field::Values(d), Field::Values(m), Field::Any) = (dom, month, dow) {
        if d.len() == 1 && m.len() == 1 {
            let i = usize::try_from(m[0]).ok()?.checked_sub(1)?;
            return Some(if ru {
                format!("{} {}", d[0], MONTHS_RU_OF.get(i)?)
            } else {
                format!("on {} {}", MONTHS_EN.get(i)?, d[0])
            });
        }
    }
    let days_of_month = match dom {
        Field::Any => None,
        Field::Last => Some(
            if ru {
                "в последний день месяца"
            } else {
                "on the last day of the month"
            }
            .to_string(),
        ),
        Field::Values(d) if d.len() <= MAX_LISTED => {
            let items: Vec<String> = d
                .iter()
                .map(|n| if ru { format!("{n}-го") } else { ordinal_en(*n) })
                .collect();
            let items: Vec<&str> = items.iter().map(String::as_str).collect();
            Some(if ru {
                format!("{} числа", list(&items, and))
            } else {
                format!("on the {}", list(&items, and))
            })
        }
        _ => return None,
    };
    let days_of_week = match dow {
        Field::Any => None,
        Field::Values(d) => {
            // 7 is Sunday too.
            let mut d: Vec<u32> = d.iter().map(|x| x % 7).collect();
            d.sort_unstable();
            d.dedup();
            Some(match d.as_slice() {
                [1, 2, 3, 4, 5] => if ru { "по будням" } else { "on weekdays" }.to_string(),
                [0, 6] => if ru { "по выходным" } else { "at weekends" }.to_string(),
                _ => {
                    d.sort_by_key(|x| (x + 6) % 7);
                    let names: Vec<&str> = d
                        .iter()
                        .filter_map(|x| {
                            if ru {
                                DAYS_RU.get(*x as usize)
                            } else {
                                DAYS_EN.get(*x as usize)
                            }
                            .copied()
                        })
                        .collect();
                    format!("{} {}", if ru { "по" } else { "on" }, list(&names, and))
                }
            })
        }
        _ => return None,
    };
    let months = match month {
        Field::Any => None,
        Field::Values(m) => {
            let names = month_names(m, if ru { &MONTHS_RU_IN } else { &MONTHS_EN })?;
            Some(format!("{} {}", if ru { "в" } else { "in" }, list(&names, and)))
        }
        _ => return None,
    };
    let days = match (days_of_month, days_of_week) {
        (Some(a), Some(b)) => Some(format!("{a} {or} {b}")),
        (a, b) => a.or(b),
    };
    Some(match (days, months) {
        (Some(d), Some(m)) => format!("{d} {m}"),
        (Some(d), None) => d,
        (None, Some(m)) => m,
        (None, None) => String::new(),
    })
}

/// `expression` (5 fields, 6 with leading seconds, or a nickname) in words, or None when it
/// uses something this does not read.
pub fn describe(expression: &str, lang: Language) -> Option<String> {
    let ru = lang == Language::Ru;
    let expanded = match expression.trim().to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
        "@monthly" => "0 0 1 * *".to_string(),
        "@weekly" => "0 0 * * 0".to_string(),
        "@daily" | "@midnight" => "0 0 * * *".to_string(),
        "@hourly" => "0 * * * *".to_string(),
        _ => expression.trim().to_string(),
    };
    let f: Vec<&str> = expanded.split_whitespace().collect();
    let f = match f.len() {
        5 => f,
        // Seconds other than :00 are rare enough to leave to croner.
        6 if f[0] == "0" => f[1..].to_vec(),
        _ => return None,
    };
    let minute = parse(f[0], 0, 59, &[], 0)?;
    let hour = parse(f[1], 0, 23, &[], 0)?;
    let dom = if f[2].eq_ignore_ascii_case("L") {
        Field::Last
    } else {
        parse(f[2], 1, 31, &[], 0)?
    };
    let month = parse(f[3], 1, 12, &MONTHS, 1)?;
    let dow = parse(f[4], 0, 7, &WEEKDAYS, 0)?;
    // A step over days or months ("every 10th day") is not spelled out here.
    if matches!(dom, Field::Step { .. }) || matches!(month, Field::Step { .. }) || matches!(dow, Field::Step { .. }) {
        return None;
    }
    let (time, exact) = time_part(&minute, &hour, ru)?;
    let days = day_part(&dom, &month, &dow, ru)?;
    Some(match (days.is_empty(), exact) {
        (true, true) => format!("{} {time}", if ru { "каждый день" } else { "every day" }),
        (true, false) => time,
        (false, true) => format!("{days} {time}"),
        (false, false) => format!("{days}, {time}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ru(e: &str) -> Option<String> {
        describe(e, Language::Ru)
    }
    fn en(e: &str) -> Option<String> {
        describe(e, Language::En)
    }

    #[test]
    fn given_common_custom_expressions_when_described_then_they_read_naturally_in_both_languages() {
        let cases = [
            (
                "*/10 9-18 * * 1-5",
                "по будням, раз в 10 минут с 09:00 по 18:59",
                "on weekdays, every 10 minutes from 09:00 to 18:59",
            ),
            (
                "0 9,18 * * *",
                "каждый день в 09:00 и 18:00",
                "every day at 09:00 and 18:00",
            ),
            (
                "30 2 1,15 * *",
                "1-го и 15-го числа в 02:30",
                "on the 1st and 15th at 02:30",
            ),
            ("0 0 1 1 *", "1 января в 00:00", "on January 1 at 00:00"),
            ("@yearly", "1 января в 00:00", "on January 1 at 00:00"),
            (
                "0 23 L * *",
                "в последний день месяца в 23:00",
                "on the last day of the month at 23:00",
            ),
            ("5 * * * *", "каждый час, в :05", "every hour at :05"),
            ("15 */3 * * *", "раз в 3 часа, в :15", "every 3 hours at :15"),
            (
                "0 8 * JAN,JUL MON",
                "по понедельникам в январе и июле в 08:00",
                "on Mondays in January and July at 08:00",
            ),
            (
                "0 12 13 * 5",
                "13-го числа или по пятницам в 12:00",
                "on the 13th or on Fridays at 12:00",
            ),
            ("0 0 * * 6,0", "по выходным в 00:00", "at weekends at 00:00"),
            ("0 0 0 * * *", "каждый день в 00:00", "every day at 00:00"),
            // Nine times are more than are spelled out: a run of hours reads as a span.
            (
                "0 9-17 * * *",
                "каждый час в :00 с 09:00 по 17:00",
                "every hour at :00 from 09:00 to 17:00",
            ),
            (
                "*/5 * * * 1-5",
                "по будням, раз в 5 минут",
                "on weekdays, every 5 minutes",
            ),
        ];
        for (e, want_ru, want_en) in cases {
            assert_eq!(ru(e).as_deref(), Some(want_ru), "{e}");
            assert_eq!(en(e).as_deref(), Some(want_en), "{e}");
        }
    }

    #[test]
    fn given_rare_forms_when_described_then_nothing_is_guessed() {
        for e in [
            "0 0 15W * *",
            "0 0 * * 5#3",
            "0 0 */10 * *",
            "30 0 0 * * *",
            "0 0 1 1 * 2030",
            "nonsense",
            "0 0 32 * *",
        ] {
            assert_eq!(ru(e), None, "{e}");
        }
    }
}
