//! The web editor's schedule builder: the common shapes of a schedule (every N minutes, daily
//! at, weekly on days at…) turned into the cron expression the job stores. The expression is
//! then parsed, previewed and fired by [`crate::schedule::CronSchedule`] like any other, so
//! the builder cannot make a schedule the API would not accept.

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
    fn given_an_expression_of_no_shape_then_it_is_custom() {
        for e in ["@daily", "0 0 9 * * MON", "0 9 1-7 * 1", "*/5 9-17 * * *", "0 3 * 1 *"] {
            assert_eq!(Builder::recognise(e), Builder::Custom(e.to_string()), "{e}");
        }
    }
}
