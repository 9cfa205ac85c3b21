//! The web editor's schedule builder: the common shapes of a schedule (every N minutes, daily
//! at, weekly on days at…) turned into the cron expression the job stores. The expression is
//! then parsed, previewed and fired by [`crate::schedule::CronSchedule`] like any other, so
//! the builder cannot make a schedule the API would not accept.

use crate::channel::Language;
use crate::FieldError;

/// One shape of schedule, as the builder's form describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Builder {
    EveryMinutes(u32),
    EveryHours(u32),
    Daily {
        hour: u32,
        minute: u32,
    },
    /// Days are 0 (Sunday) to 6 (Saturday), as cron numbers them.
    Weekly {
        days: Vec<u32>,
        hour: u32,
        minute: u32,
    },
    /// Day 1 to 31, or 0 for the last day of the month.
    Monthly {
        day: u32,
        hour: u32,
        minute: u32,
    },
    Custom(String),
}

/// `HH:MM` (24-hour) into (hour, minute).
pub fn parse_time_of_day(field: &str, s: &str) -> Result<(u32, u32), FieldError> {
    let bad = || {
        FieldError::new(
            field,
            "invalid_time",
            format!("{field} must be a time of day such as 03:30"),
        )
    };
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok((h, m))
}

impl Builder {
    /// The 5-field cron expression of this shape (a custom expression is returned as written).
    pub fn expression(&self) -> Result<String, FieldError> {
        let range = |field: &str, n: u32, lo: u32, hi: u32| {
            if (lo..=hi).contains(&n) {
                Ok(n)
            } else {
                Err(FieldError::new(
                    field,
                    "out_of_range",
                    format!("{field} must be from {lo} to {hi}"),
                ))
            }
        };
        Ok(match self {
            Builder::EveryMinutes(1) => "* * * * *".into(),
            Builder::EveryMinutes(n) => format!("*/{} * * * *", range("every_minutes", *n, 1, 59)?),
            Builder::EveryHours(1) => "0 * * * *".into(),
            Builder::EveryHours(n) => format!("0 */{} * * *", range("every_hours", *n, 1, 23)?),
            Builder::Daily { hour, minute } => format!("{minute} {hour} * * *"),
            Builder::Weekly { days, hour, minute } => {
                if days.is_empty() {
                    return Err(FieldError::new("days", "required", "choose at least one day"));
                }
                let mut d = days.clone();
                d.sort_unstable();
                d.dedup();
                for x in &d {
                    range("days", *x, 0, 6)?;
                }
                let list: Vec<String> = d.iter().map(u32::to_string).collect();
                format!("{minute} {hour} * * {}", list.join(","))
            }
            Builder::Monthly { day: 0, hour, minute } => format!("{minute} {hour} L * *"),
            Builder::Monthly { day, hour, minute } => {
                format!("{minute} {hour} {} * *", range("day_of_month", *day, 1, 31)?)
            }
            Builder::Custom(e) if e.trim().is_empty() => {
                return Err(FieldError::new("schedule", "required", "schedule is required"))
            }
            Builder::Custom(e) => e.trim().to_string(),
        })
    }

    /// The builder's shape of a stored expression, where it has one (so the editor opens a job
    /// on the right tab); anything else is `Custom`.
    pub fn recognise(expr: &str) -> Builder {
        let f: Vec<&str> = expr.split_whitespace().collect();
        let num = |s: &str| s.parse::<u32>().ok();
        let custom = || Builder::Custom(expr.trim().to_string());
        if f.len() != 5 || f[3] != "*" {
            return custom();
        }
        match (f[0], f[1], f[2], f[4]) {
            ("*", "*", "*", "*") => Builder::EveryMinutes(1),
            (m, "*", "*", "*") if m.starts_with("*/") => num(&m[2..]).map_or_else(custom, Builder::EveryMinutes),
            ("0", "*", "*", "*") => Builder::EveryHours(1),
            ("0", h, "*", "*") if h.starts_with("*/") => num(&h[2..]).map_or_else(custom, Builder::EveryHours),
            (m, h, dom, dow) => match (num(m), num(h)) {
                (Some(minute), Some(hour)) if minute < 60 && hour < 24 => match (dom, dow) {
                    ("*", "*") => Builder::Daily { hour, minute },
                    ("*", days) => {
                        let d: Option<Vec<u32>> = days.split(',').map(num).collect();
                        match d {
                            Some(days) if days.iter().all(|d| *d <= 6) => Builder::Weekly { days, hour, minute },
                            _ => custom(),
                        }
                    }
                    ("L", "*") => Builder::Monthly { day: 0, hour, minute },
                    (dom, "*") => num(dom)
                        .filter(|d| (1..=31).contains(d))
                        .map_or_else(custom, |day| Builder::Monthly { day, hour, minute }),
                    _ => custom(),
                },
                _ => custom(),
            },
        }
    }
}

/// Day names as a weekly schedule reads them: "по понедельникам" / "on Mondays".
pub(crate) const DAYS_RU: [&str; 7] = [
    "воскресеньям",
    "понедельникам",
    "вторникам",
    "средам",
    "четвергам",
    "пятницам",
    "субботам",
];
pub(crate) const DAYS_EN: [&str; 7] = [
    "Sundays",
    "Mondays",
    "Tuesdays",
    "Wednesdays",
    "Thursdays",
    "Fridays",
    "Saturdays",
];

pub(crate) fn list(items: &[&str], and: &str) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} {and} {last}", rest.join(", ")),
    }
}

impl Builder {
    /// The schedule in words, in `lang`: the builder's shapes, and the common forms of a custom
    /// expression ([`crate::cron_words`]); None for the rarer ones (croner then describes them,
    /// in English).
    pub fn describe(&self, lang: Language) -> Option<String> {
        let at = |h: u32, m: u32| format!("{h:02}:{m:02}");
        let ru = lang == Language::Ru;
        Some(match (self, ru) {
            (Builder::EveryMinutes(1), true) => "каждую минуту".into(),
            (Builder::EveryMinutes(1), false) => "every minute".into(),
            (Builder::EveryMinutes(n), true) => {
                let w = match lang.plural((*n).into()) {
                    "one" => "минуту",
                    "few" => "минуты",
                    _ => "минут",
                };
                format!("раз в {n} {w}")
            }
            (Builder::EveryMinutes(n), false) => format!("every {n} minutes"),
            (Builder::EveryHours(1), true) => "каждый час, в начале часа".into(),
            (Builder::EveryHours(1), false) => "every hour, on the hour".into(),
            (Builder::EveryHours(n), true) => {
                let w = match lang.plural((*n).into()) {
                    "one" => "час",
                    "few" => "часа",
                    _ => "часов",
                };
                format!("раз в {n} {w}, в начале часа")
            }
            (Builder::EveryHours(n), false) => format!("every {n} hours, on the hour"),
            (Builder::Daily { hour, minute }, true) => format!("каждый день в {}", at(*hour, *minute)),
            (Builder::Daily { hour, minute }, false) => format!("every day at {}", at(*hour, *minute)),
            (Builder::Weekly { days, hour, minute }, _) => {
                let mut d = days.clone();
                d.sort_unstable();
                d.dedup();
                let time = at(*hour, *minute);
                if d.len() == 7 {
                    return Some(if ru {
                        format!("каждый день в {time}")
                    } else {
                        format!("every day at {time}")
                    });
                }
                if d == [1, 2, 3, 4, 5] {
                    return Some(if ru {
                        format!("по будням в {time}")
                    } else {
                        format!("on weekdays at {time}")
                    });
                }
                if d == [0, 6] {
                    return Some(if ru {
                        format!("по выходным в {time}")
                    } else {
                        format!("at weekends at {time}")
                    });
                }
                // Monday first, as both languages' calendars here start the week.
                d.sort_by_key(|x| (x + 6) % 7);
                let names: Vec<&str> = d
                    .iter()
                    .filter_map(|x| {
                        let i = usize::try_from(*x).ok()?;
                        if ru { DAYS_RU.get(i) } else { DAYS_EN.get(i) }.copied()
                    })
                    .collect();
                if ru {
                    format!("по {} в {time}", list(&names, "и"))
                } else {
                    format!("on {} at {time}", list(&names, "and"))
                }
            }
            (Builder::Monthly { day: 0, hour, minute }, true) => {
                format!("в последний день месяца в {}", at(*hour, *minute))
            }
            (Builder::Monthly { day: 0, hour, minute }, false) => {
                format!("on the last day of every month at {}", at(*hour, *minute))
            }
            (Builder::Monthly { day, hour, minute }, true) => {
                format!("каждый месяц {day}-го числа в {}", at(*hour, *minute))
            }
            (Builder::Monthly { day, hour, minute }, false) => {
                format!("every month on day {day} at {}", at(*hour, *minute))
            }
            (Builder::Custom(e), _) => return crate::cron_words::describe(e, lang),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::CronSchedule;

    #[test]
    fn given_each_shape_when_built_then_the_expression_parses_and_reads_back_as_that_shape() {
        let shapes = [
            (Builder::EveryMinutes(1), "* * * * *"),
            (Builder::EveryMinutes(15), "*/15 * * * *"),
            (Builder::EveryHours(1), "0 * * * *"),
            (Builder::EveryHours(6), "0 */6 * * *"),
            (Builder::Daily { hour: 3, minute: 0 }, "0 3 * * *"),
            (
                Builder::Weekly {
                    days: vec![5, 1, 3],
                    hour: 9,
                    minute: 30,
                },
                "30 9 * * 1,3,5",
            ),
            (
                Builder::Monthly {
                    day: 1,
                    hour: 0,
                    minute: 5,
                },
                "5 0 1 * *",
            ),
            (
                Builder::Monthly {
                    day: 0,
                    hour: 23,
                    minute: 0,
                },
                "0 23 L * *",
            ),
        ];
        for (shape, expr) in shapes {
            assert_eq!(shape.expression().unwrap(), expr);
            CronSchedule::parse(expr, "Europe/Moscow").unwrap();
            let back = Builder::recognise(expr);
            let back = match back {
                Builder::Weekly { mut days, hour, minute } => {
                    days.sort_unstable();
                    Builder::Weekly { days, hour, minute }
                }
                b => b,
            };
            let want = match shape {
                Builder::Weekly { mut days, hour, minute } => {
                    days.sort_unstable();
                    Builder::Weekly { days, hour, minute }
                }
                b => b,
            };
            assert_eq!(back, want, "{expr}");
        }
    }

    #[test]
    fn given_out_of_range_values_then_the_field_is_named() {
        assert_eq!(
            Builder::EveryMinutes(60).expression().unwrap_err().field,
            "every_minutes"
        );
        assert_eq!(Builder::EveryHours(0).expression().unwrap_err().field, "every_hours");
        let no_days = Builder::Weekly {
            days: vec![],
            hour: 1,
            minute: 0,
        };
        assert_eq!(no_days.expression().unwrap_err().field, "days");
        let bad = Builder::Monthly {
            day: 32,
            hour: 1,
            minute: 0,
        };
        assert_eq!(bad.expression().unwrap_err().field, "day_of_month");
        assert_eq!(parse_time_of_day("time", "24:00").unwrap_err().field, "time");
        assert_eq!(parse_time_of_day("time", "07:05").unwrap(), (7, 5));
        assert_eq!(Builder::Custom(" ".into()).expression().unwrap_err().field, "schedule");
    }

    #[test]
    fn given_each_shape_then_it_is_described_in_both_languages() {
        let cases = [
            ("* * * * *", "каждую минуту", "every minute"),
            ("*/2 * * * *", "раз в 2 минуты", "every 2 minutes"),
            ("*/15 * * * *", "раз в 15 минут", "every 15 minutes"),
            ("*/21 * * * *", "раз в 21 минуту", "every 21 minutes"),
            (
                "0 */3 * * *",
                "раз в 3 часа, в начале часа",
                "every 3 hours, on the hour",
            ),
            ("0 3 * * *", "каждый день в 03:00", "every day at 03:00"),
            (
                "30 9 * * 1,3,5",
                "по понедельникам, средам и пятницам в 09:30",
                "on Mondays, Wednesdays and Fridays at 09:30",
            ),
            (
                "0 9 * * 0,1",
                "по понедельникам и воскресеньям в 09:00",
                "on Mondays and Sundays at 09:00",
            ),
            ("0 8 * * 1,2,3,4,5", "по будням в 08:00", "on weekdays at 08:00"),
            ("0 8 * * 0,6", "по выходным в 08:00", "at weekends at 08:00"),
            (
                "5 0 1 * *",
                "каждый месяц 1-го числа в 00:05",
                "every month on day 1 at 00:05",
            ),
            (
                "0 23 L * *",
                "в последний день месяца в 23:00",
                "on the last day of every month at 23:00",
            ),
        ];
        for (expr, ru, en) in cases {
            let b = Builder::recognise(expr);
            assert_eq!(b.describe(Language::Ru).as_deref(), Some(ru), "{expr}");
            assert_eq!(b.describe(Language::En).as_deref(), Some(en), "{expr}");
        }
        // A custom expression is read by `cron_words` where it can be, and left to croner where not.
        assert_eq!(
            Builder::recognise("@daily").describe(Language::Ru).as_deref(),
            Some("каждый день в 00:00")
        );
        assert_eq!(Builder::recognise("0 0 15W * *").describe(Language::Ru), None);
    }

    #[test]
    fn given_an_expression_of_no_shape_then_it_is_custom() {
        for e in ["@daily", "0 0 9 * * MON", "0 9 1-7 * 1", "*/5 9-17 * * *", "0 3 * 1 *"] {
            assert_eq!(Builder::recognise(e), Builder::Custom(e.to_string()), "{e}");
        }
    }
}
