//! Cron schedules: validation at the edge, and fire-time arithmetic for the dispatcher.
//!
//! # Accepted forms
//!
//! - **5 fields** `minute hour day-of-month month day-of-week`: minute precision, fires on second 0.
//! - **6 fields** with a *leading seconds* field: `second minute hour day-of-month month day-of-week`.
//! - **Nicknames** (case-insensitive): `@yearly` `@annually` `@monthly` `@weekly` `@daily`
//!   `@midnight` `@hourly`.
//!
//! Fields take `*`, lists, ranges and `*/n` / `a-b/n` steps, month and weekday names (`JAN`,
//! `MON`), `?` as `*` in the day fields, and croner's extensions: `L` (last day of the month),
//! `15W` (weekday nearest the 15th), `LW` (last weekday), `5#3` (third Friday), `5L` / `5#L`
//! (last Friday). Weekdays are 0-7 with both 0 and 7 meaning Sunday, as in Vixie cron.
//! Refused: 7 fields (a year field: our schedules are open-ended), `0/10`-style "sloppy" steps
//! (Vixie cron rejects them too), empty or over-long (> 200 characters) input, and any expression
//! that never fires (`0 0 30 2 *`), so a job can never be saved that would silently do nothing.
//!
//! Day-of-month and day-of-week combine as in Vixie/Debian cron (crontab(5)): if both are
//! *restricted* a day matches when **either** matches (`0 0 13 * 5` is every 13th and every
//! Friday); a field counts as unrestricted when it *starts with* `*`, so `0 0 */10 * 5` means
//! "days 1, 11, 21, 31 that are also Fridays".
//!
//! # Daylight-saving time
//!
//! Users write wall-clock times in their zone; a DST change makes some wall times not exist
//! (spring forward) and others happen twice (fall back). We follow Debian's cron, which users
//! already know, and which splits jobs by whether the second/minute/hour fields start with `*`:
//!
//! - **Fixed-time** schedules (`30 2 * * *`, `0 1-3 * * *`, `0,30 2 * * 1`): a time skipped by
//!   spring-forward fires once, at the first instant after the jump (03:00 local); a time in the
//!   repeated hour fires once, in its first occurrence. A daily job thus runs exactly once a day.
//! - **Interval / wildcard** schedules (`*/15 * * * *`, `0 * * * *`): they keep their rhythm in
//!   real time. They fire in both copies of a repeated hour and have no fires in a skipped hour.
//!
//! croner has its own DST handling, but decides "fixed" differently (only single values count) and
//! so would fire `0 1-3 * * *` twice on fall-back. So croner is only ever asked calendar questions
//! ("next wall time matching the pattern") on a zone with no DST, and this module alone maps wall
//! times to instants. All inputs and outputs are UTC instants; time is always passed in.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, SubsecRound, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// The zone a job gets when its creator names none.
pub const DEFAULT_TIMEZONE: &str = "Europe/Moscow";

/// Longest expression accepted; real cron lines are far shorter, and this bounds parsing work.
const MAX_EXPRESSION_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression: {0}")]
    InvalidExpression(String),
    #[error("unknown timezone: {0}")]
    UnknownTimezone(String),
    #[error("the schedule never fires")]
    NeverFires,
}

/// Parses an IANA zone name (`Europe/Berlin`, `UTC`), exactly as spelled in the tz database.
/// Abbreviations (`CEST`) and offsets (`+03:00`) are refused: they carry no DST rules.
pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::UnknownTimezone(name.to_owned()))
}

/// A validated cron expression bound to a time zone.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    /// The text exactly as given, so it round-trips through storage unchanged.
    expression: String,
    tz: Tz,
    /// Matches wall-clock times only; see the module docs for why it never sees `tz`.
    cron: Cron,
    has_seconds: bool,
    /// Debian's "wildcard job": DST is handled in real time rather than once per wall time.
    interval: bool,
}

/// Fire times missed while the dispatcher was down, per [`CronSchedule::misfires`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misfires {
    /// The most recent missed fire, if it is still within the grace period: run it now.
    pub fire: Option<DateTime<Utc>>,
    /// How many missed fires are not run (a lower bound when `truncated`).
    pub skipped_count: u64,
    pub first_skipped: Option<DateTime<Utc>>,
    pub last_skipped: Option<DateTime<Utc>>,
    /// More than `max_scan` fires were missed; counting stopped, `fire` and the bounds are exact.
    pub truncated: bool,
}

/// See [`CronSchedule::recent_fires`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentFires {
    pub kept: Vec<DateTime<Utc>>,
    pub skipped_count: u64,
    pub first_skipped: Option<DateTime<Utc>>,
    pub last_skipped: Option<DateTime<Utc>>,
    pub truncated: bool,
}

impl CronSchedule {
    /// Accepts: 5 fields (minute precision), 6 fields with a LEADING SECONDS field, and nicknames
    /// @yearly @annually @monthly @weekly @daily @midnight @hourly. Rejects 7 fields (years), empty,
    /// over-long (>200 chars) input. Refuses an expression that never fires (NeverFires) by
    /// computing the next occurrence from now.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, ScheduleError> {
        Self::parse_at(expression, timezone, Utc::now())
    }

    /// Re-parses an expression that [`CronSchedule::parse`] accepted when it was stored. Same
    /// syntax and zone checks, but no never-fires search: it does not read the clock, so replaying
    /// old events is deterministic (a schedule that cannot fire just yields no fire times).
    pub fn parse_stored(expression: &str, timezone: &str) -> Result<Self, ScheduleError> {
        Self::parse_syntax(expression, timezone)
    }

    /// [`CronSchedule::parse`] with the clock passed in.
    fn parse_at(expression: &str, timezone: &str, now: DateTime<Utc>) -> Result<Self, ScheduleError> {
        let schedule = Self::parse_syntax(expression, timezone)?;
        // Without a year field a pattern repeats with the 400-year Gregorian cycle, and croner
        // searches up to year 5000, so "no fire after now" really means "never".
        if schedule.next_after(now).is_none() {
            return Err(ScheduleError::NeverFires);
        }
        Ok(schedule)
    }

    fn parse_syntax(expression: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let text = expand(expression)?;
        let fields = Fields::split(text)?;
        let cron = CronParser::builder()
            // Optional = 5 fields, or 6 read as seconds-first; 7 are already refused by `Fields`.
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            // Vixie's DOM_STAR/DOW_STAR rule; croner's default (`false`) is the OR half of it.
            .dom_and_dow(fields.day_fields_and())
            // 0 = Sunday, as in Vixie cron (the Quartz numbering would shift every weekday).
            .alternative_weekdays(false)
            .sloppy_ranges(false)
            .build()
            .parse(text)
            .map_err(|e| ScheduleError::InvalidExpression(e.to_string()))?;
        Ok(Self {
            expression: expression.to_owned(),
            tz: parse_timezone(timezone)?,
            cron,
            has_seconds: fields.has_seconds,
            interval: fields.is_interval(),
        })
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// True for the 6-field form (a leading seconds field).
    pub fn has_seconds(&self) -> bool {
        self.has_seconds
    }

    /// First fire time STRICTLY after `after` (UTC in, UTC out). None if there is none.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.fires_after(after).next()
    }

    /// The next `count` fire times strictly after `after`, in the schedule's zone (for the preview API).
    pub fn upcoming(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Tz>> {
        self.fires_after(after)
            .take(count)
            .map(|t| t.with_timezone(&self.tz))
            .collect()
    }

    /// The shortest gap between consecutive fires among the first `samples` fires after `after`
    /// (None for a schedule with fewer than two). Plans set a minimum interval; sampling real
    /// fire times, not the expression's text, catches `0,1 * * * *` as a one-minute schedule.
    pub fn min_interval(&self, after: DateTime<Utc>, samples: usize) -> Option<Duration> {
        let mut fires = self.fires_after(after).take(samples);
        let mut prev = fires.next()?;
        let mut min: Option<Duration> = None;
        for t in fires {
            let gap = t - prev;
            min = Some(min.map_or(gap, |m| m.min(gap)));
            prev = t;
        }
        min
    }

    /// English description (croner's describe()).
    pub fn describe(&self) -> String {
        self.cron.describe()
    }

    /// What to do after downtime: fire times in (anchor, now]. Returns the most recent one as
    /// `fire` if now - it <= grace, the others (and it too when it is outside grace) as skipped.
    /// Bounded: stop counting after `max_scan` (e.g. 100_000) occurrences and say so (`truncated`).
    /// A `max_scan` of 0 is treated as 1.
    pub fn misfires(&self, anchor: DateTime<Utc>, now: DateTime<Utc>, grace: Duration, max_scan: usize) -> Misfires {
        let mut missed = self.fires_after(anchor).take_while(|t| *t <= now);
        let mut tally = Tally::default();
        missed.by_ref().take(max_scan.max(1)).for_each(|t| tally.push(t));
        if missed.next().is_none() {
            return tally.settle(now, grace);
        }
        // Too many to walk: the count stops here, but the fire and the last skipped time are
        // what the dispatcher acts on, so find them exactly by searching back from `now`.
        let latest = self.latest_at_or_before(now);
        let (fire, last_skipped) = match latest {
            Some(t) if now - t <= grace => (Some(t), self.latest_before(t)),
            _ => (None, latest),
        };
        Misfires {
            fire,
            skipped_count: tally.count,
            first_skipped: tally.first,
            last_skipped,
            truncated: true,
        }
    }

    /// For catching up: the last `keep` fires in (anchor, now], oldest first, and what came
    /// before them (count and bounds), walking at most `max_scan` fires. Past that it gives up
    /// counting and keeps only the latest fire (`truncated`).
    pub fn recent_fires(&self, anchor: DateTime<Utc>, now: DateTime<Utc>, keep: usize, max_scan: usize) -> RecentFires {
        let keep = keep.max(1);
        let mut kept: VecDeque<DateTime<Utc>> = VecDeque::with_capacity(keep);
        let mut out = RecentFires::default();
        for (i, t) in self.fires_after(anchor).take_while(|t| *t <= now).enumerate() {
            if i >= max_scan.max(1) {
                let m = self.misfires(anchor, now, Duration::MAX, max_scan);
                return RecentFires {
                    kept: m.fire.into_iter().collect(),
                    skipped_count: m.skipped_count,
                    first_skipped: m.first_skipped,
                    last_skipped: m.last_skipped,
                    truncated: true,
                };
            }
            if kept.len() == keep {
                if let Some(old) = kept.pop_front() {
                    out.skipped_count += 1;
                    out.first_skipped.get_or_insert(old);
                    out.last_skipped = Some(old);
                }
            }
            kept.push_back(t);
        }
        out.kept = kept.into();
        out
    }

    /// All fire instants strictly after `after`, ascending, no repeats.
    fn fires_after(&self, after: DateTime<Utc>) -> Fires<'_> {
        let wall = self.wall_of(after);
        // A repeated hour that began before `after`'s wall time still has its second copy ahead,
        // so start one fold-length earlier; `Fires` drops whatever is not after `after`.
        let next_wall = wall.checked_sub_signed(self.fold_length(wall));
        Fires {
            schedule: self,
            after,
            next_wall,
            head: None,
            repeats: VecDeque::new(),
            last: None,
        }
    }

    /// The latest fire instant at or before `at`, by walking wall times backwards.
    fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let wall = self.wall_of(at);
        // Mirror of `fires_after`: if `at` is in a repeated hour's second copy, later wall times
        // of that hour already fired (first copy) before `at`.
        let mut from = wall.checked_add_signed(self.fold_length(wall))?;
        let mut best: Option<DateTime<Utc>> = None;
        loop {
            let Some(wall) = self.wall_prev(from) else { return best };
            let fires = self.fire_instants(wall).into_iter().flatten();
            best = best.max(fires.filter(|t| *t <= at).max());
            // Instants of earlier wall times are no later than this one's latest instant, so
            // once that cannot beat `best`, nothing further back can.
            if let (Some(found), Some(latest)) = (best, self.latest_landing(wall)) {
                if latest <= found {
                    return best;
                }
            }
            match wall.checked_sub_signed(Duration::seconds(1)) {
                Some(earlier) => from = earlier,
                None => return best,
            }
        }
    }

    fn latest_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.latest_at_or_before(at.checked_sub_signed(Duration::nanoseconds(1))?)
    }

    /// `at` on the schedule's wall clock, to the whole second (cron has no finer field).
    fn wall_of(&self, at: DateTime<Utc>) -> NaiveDateTime {
        at.with_timezone(&self.tz).naive_local().trunc_subsecs(0)
    }

    /// The next wall time at or after `from` that the pattern matches, ignoring DST.
    fn wall_next(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        // Handing croner the wall time as UTC (no DST) makes it a pure calendar matcher. It errs
        // past year 5000, which is how a never-firing pattern ends the search.
        self.cron
            .find_next_occurrence(&from.and_utc(), true)
            .ok()
            .map(|t| t.naive_utc())
    }

    /// The last wall time at or before `from` that the pattern matches, ignoring DST.
    fn wall_prev(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        self.cron
            .find_previous_occurrence(&from.and_utc(), true)
            .ok()
            .map(|t| t.naive_utc())
    }

    fn land(&self, wall: NaiveDateTime) -> Landing {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => Landing::Once(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(a, b) => {
                let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                Landing::Twice(a.min(b), a.max(b))
            }
            LocalResult::None => Landing::Skipped,
        }
    }

    /// The DST policy (see module docs): the instants at which a matching wall time fires.
    fn fire_instants(&self, wall: NaiveDateTime) -> [Option<DateTime<Utc>>; 2] {
        match self.land(wall) {
            Landing::Once(t) => [Some(t), None],
            Landing::Twice(first, second) if self.interval => [Some(first), Some(second)],
            Landing::Twice(first, _) => [Some(first), None],
            Landing::Skipped if self.interval => [None, None],
            Landing::Skipped => [self.gap_end(wall), None],
        }
    }

    /// The latest instant `wall` can denote in this zone, whatever the policy; None in a gap.
    fn latest_landing(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.land(wall) {
            Landing::Once(t) | Landing::Twice(_, t) => Some(t),
            Landing::Skipped => None,
        }
    }

    /// How long the repeated hour containing `wall` is (zero if `wall` happens only once).
    fn fold_length(&self, wall: NaiveDateTime) -> Duration {
        match self.land(wall) {
            Landing::Twice(first, second) => second - first,
            _ => Duration::zero(),
        }
    }

    /// For a wall time skipped by a DST jump: the instant the jump happens (the first real
    /// instant after the gap), found by galloping then bisecting on wall time.
    fn gap_end(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        let exists = |t: NaiveDateTime| !matches!(self.land(t), Landing::Skipped);
        let (mut before, mut step) = (wall, Duration::minutes(1));
        // Gaps are usually an hour, a whole day at most (Samoa, 2011); give up past ~3 days.
        let mut after = loop {
            let probe = wall.checked_add_signed(step)?;
            if exists(probe) {
                break probe;
            }
            if step > Duration::days(3) {
                return None;
            }
            (before, step) = (probe, step * 2);
        };
        // Zone transitions fall on whole seconds, so bisecting to one second finds the edge.
        while (after - before).num_seconds() > 1 {
            let mid = before + Duration::seconds((after - before).num_seconds() / 2);
            if exists(mid) {
                after = mid
            } else {
                before = mid
            }
        }
        self.tz
            .from_local_datetime(&after)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Where a wall time falls on the real time line.
enum Landing {
    Once(DateTime<Utc>),
    /// In a repeated (fall-back) hour: earlier and later instant.
    Twice(DateTime<Utc>, DateTime<Utc>),
    /// In a spring-forward gap.
    Skipped,
}

/// Forward iterator over fire instants. Walks matching wall times in order; a wall time's first
/// (or only) instant never decreases along that walk, and neither does its second-copy instant,
/// so two ascending streams are merged: `head` (first instants) and `repeats` (second copies).
struct Fires<'a> {
    schedule: &'a CronSchedule,
    after: DateTime<Utc>,
    /// Where the next wall-time search starts (inclusive); None once the pattern is exhausted.
    next_wall: Option<NaiveDateTime>,
    head: Option<DateTime<Utc>>,
    repeats: VecDeque<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

impl Fires<'_> {
    /// Walks to the next matching wall time that fires, queueing any second-copy instant.
    fn pull_head(&mut self) -> Option<DateTime<Utc>> {
        loop {
            let Some(wall) = self.next_wall.and_then(|from| self.schedule.wall_next(from)) else {
                // Remember exhaustion: a never-matching search is the slowest one croner does.
                self.next_wall = None;
                return None;
            };
            self.next_wall = wall.checked_add_signed(Duration::seconds(1));
            let [first, second] = self.schedule.fire_instants(wall);
            self.repeats.extend(second);
            if first.is_some() {
                return first;
            }
        }
    }

    fn pop_earliest(&mut self) -> Option<DateTime<Utc>> {
        match (self.head, self.repeats.front()) {
            (Some(head), Some(repeat)) if *repeat < head => self.repeats.pop_front(),
            (Some(_), _) => self.head.take(),
            (None, _) => self.repeats.pop_front(),
        }
    }
}

impl Iterator for Fires<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        loop {
            if self.head.is_none() {
                self.head = self.pull_head();
            }
            let t = self.pop_earliest()?;
            // Strictly after `after` and strictly increasing: the callers' contract, and it also
            // folds together wall times that land on one instant (`0,30 2` in a gap).
            if t > self.after && self.last.is_none_or(|last| t > last) {
                self.last = Some(t);
                return Some(t);
            }
        }
    }
}

/// The expression with surrounding blanks removed and nicknames expanded.
fn expand(expression: &str) -> Result<&str, ScheduleError> {
    let invalid = |m: &str| Err(ScheduleError::InvalidExpression(m.to_owned()));
    if expression.chars().count() > MAX_EXPRESSION_CHARS {
        return invalid("longer than 200 characters");
    }
    let text = expression.trim();
    if text.is_empty() {
        return invalid("empty");
    }
    if !text.starts_with('@') {
        return Ok(text);
    }
    // Expanded here rather than by croner, which lacks `@midnight`.
    match text.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => Ok("0 0 1 1 *"),
        "@monthly" => Ok("0 0 1 * *"),
        "@weekly" => Ok("0 0 * * 0"),
        "@daily" | "@midnight" => Ok("0 0 * * *"),
        "@hourly" => Ok("0 * * * *"),
        _ => invalid("unknown nickname (use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"),
    }
}

/// The fields whose raw text decides semantics croner does not model the Vixie way.
struct Fields<'a> {
    /// Second (implicitly "0" in the 5-field form), minute, hour.
    time: [&'a str; 3],
    day_of_month: &'a str,
    day_of_week: &'a str,
    has_seconds: bool,
}

impl<'a> Fields<'a> {
    fn split(text: &'a str) -> Result<Self, ScheduleError> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let (time, day_of_month, day_of_week, has_seconds) = match parts[..] {
            [minute, hour, dom, _, dow] => (["0", minute, hour], dom, dow, false),
            [second, minute, hour, dom, _, dow] => ([second, minute, hour], dom, dow, true),
            [_, _, _, _, _, _, _] => {
                return Err(ScheduleError::InvalidExpression(
                    "7 fields: a year field is not supported (use 5 fields, or 6 with leading seconds)".into(),
                ))
            }
            _ => {
                return Err(ScheduleError::InvalidExpression(format!(
                    "expected 5 fields (or 6 with leading seconds), found {}",
                    parts.len()
                )))
            }
        };
        Ok(Self {
            time,
            day_of_month,
            day_of_week,
            has_seconds,
        })
    }

    /// Debian's MIN_STAR/HR_STAR test (extended to the seconds field): a `*`-led time field makes
    /// an interval job that follows real time across DST; anything else is a fixed-time job.
    fn is_interval(&self) -> bool {
        self.time.iter().any(|f| f.starts_with('*'))
    }

    /// Vixie's DOM_STAR/DOW_STAR: when either day field starts with `*` (or is croner's `?`), a
    /// day must match both. croner alone would treat `*/10` as restricted and OR it.
    fn day_fields_and(&self) -> bool {
        let star = |f: &str| f.starts_with('*') || f.starts_with('?');
        star(self.day_of_month) || star(self.day_of_week)
    }
}

/// Running summary of a forward scan over missed fires.
#[derive(Default)]
struct Tally {
    count: u64,
    first: Option<DateTime<Utc>>,
    previous: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

impl Tally {
    fn push(&mut self, t: DateTime<Utc>) {
        self.count += 1;
        self.first = self.first.or(Some(t));
        self.previous = self.last.replace(t);
    }

    /// The complete scan as a decision: run the latest if still in grace, skip the rest.
    fn settle(self, now: DateTime<Utc>, grace: Duration) -> Misfires {
        match self.last {
            Some(last) if now - last <= grace => Misfires {
                fire: Some(last),
                skipped_count: self.count - 1,
                first_skipped: self.first.filter(|_| self.count > 1),
                last_skipped: self.previous,
                truncated: false,
            },
            _ => Misfires {
                fire: None,
                skipped_count: self.count,
                first_skipped: self.first,
                last_skipped: self.last,
                truncated: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike, Weekday};

    /// A fixed "now" for the never-fires check, so no assertion depends on the real clock.
    const NOW: &str = "2026-01-01T00:00:00Z";

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test instant")
            .with_timezone(&Utc)
    }

    fn schedule(expression: &str, tz: &str) -> CronSchedule {
        CronSchedule::parse_at(expression, tz, utc(NOW)).expect("test schedule parses")
    }

    fn parse_err(expression: &str, tz: &str) -> ScheduleError {
        CronSchedule::parse_at(expression, tz, utc(NOW)).expect_err("should be refused")
    }

    fn fires(s: &CronSchedule, after: &str, n: usize) -> Vec<DateTime<Utc>> {
        s.upcoming(utc(after), n)
            .into_iter()
            .map(|t| t.with_timezone(&Utc))
            .collect()
    }

    fn utcs(list: &[&str]) -> Vec<DateTime<Utc>> {
        list.iter().map(|s| utc(s)).collect()
    }

    #[test]
    fn accepts_five_six_fields_and_nicknames() {
        for expr in [
            "* * * * *",
            "*/5 * * * * *",
            "0 9-17/2 * JAN-MAR MON-FRI",
            "0 0 L * *",
            "0 0 15W * *",
            "0 0 LW * *",
            "0 0 * * 5#3",
            "0 0 * * 5#L",
            "0 0 * * 5L",
            "0 0 * * 7L",
            "0 0 ? * MON",
            "  0 3 * * *  ",
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
            "@Daily",
        ] {
            let s = CronSchedule::parse_at(expr, "UTC", utc(NOW));
            assert!(s.is_ok(), "{expr:?} should parse: {s:?}");
        }
        // The real-clock entry point accepts too (no assertion on times).
        assert!(CronSchedule::parse("0 3 * * *", DEFAULT_TIMEZONE).is_ok());
    }

    #[test]
    fn rejects_malformed_expressions() {
        let long = format!("0 0 * * {}", "1,".repeat(100));
        for expr in [
            "",
            "   ",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "* * *",
            "* * * *",
            "foo",
            "0 0 0 1 1 * 2026",
            "* * * * * * *",
            "0/10 * * * *",
            "@reboot",
            "@every 5m",
            "0 0 @daily",
            "0 0 * * FRIDAY",
            long.as_str(),
        ] {
            assert!(
                matches!(parse_err(expr, "UTC"), ScheduleError::InvalidExpression(_)),
                "{expr:?} should be an invalid expression"
            );
        }
    }

    #[test]
    fn refuses_expressions_that_never_fire() {
        for expr in ["0 0 30 2 *", "0 0 31 4 *", "0 0 0 31 11 *"] {
            assert_eq!(parse_err(expr, "UTC"), ScheduleError::NeverFires, "{expr}");
        }
        // Leap day fires (every four years), so it is not "never".
        let leap = schedule("0 0 29 2 *", "UTC");
        assert_eq!(leap.next_after(utc(NOW)), Some(utc("2028-02-29T00:00:00Z")));
        // A stored schedule is not re-checked against the clock; it just yields nothing.
        let stored = CronSchedule::parse_stored("0 0 30 2 *", "UTC").expect("syntax is fine");
        assert_eq!(stored.next_after(utc(NOW)), None);
        assert!(stored.upcoming(utc(NOW), 3).is_empty());
    }

    #[test]
    fn timezones_are_iana_names() {
        assert_eq!(parse_timezone("UTC"), Ok(chrono_tz::UTC));
        assert_eq!(parse_timezone("Europe/Berlin"), Ok(chrono_tz::Europe::Berlin));
        assert_eq!(parse_timezone(DEFAULT_TIMEZONE), Ok(chrono_tz::Europe::Moscow));
        for bad in ["Mars/Olympus", "", "europe/berlin", "CEST", "+03:00"] {
            assert_eq!(parse_timezone(bad), Err(ScheduleError::UnknownTimezone(bad.into())));
        }
        assert_eq!(
            parse_err("0 0 * * *", "Mars/Olympus"),
            ScheduleError::UnknownTimezone("Mars/Olympus".into())
        );
        assert_eq!(
            schedule("0 0 * * *", "Europe/Berlin").timezone(),
            chrono_tz::Europe::Berlin
        );
    }

    #[test]
    fn errors_display_for_api_messages() {
        assert_eq!(ScheduleError::NeverFires.to_string(), "the schedule never fires");
        assert_eq!(
            ScheduleError::UnknownTimezone("X".into()).to_string(),
            "unknown timezone: X"
        );
        let e = parse_err("60 * * * *", "UTC").to_string();
        assert!(e.starts_with("invalid cron expression: "), "{e}");
    }

    #[test]
    fn accessors() {
        let s = schedule(" 0 3 * * * ", "Europe/Moscow");
        assert_eq!(s.expression(), " 0 3 * * * ", "kept exactly as given");
        assert!(!s.has_seconds());
        assert!(schedule("*/5 * * * * *", "UTC").has_seconds());
        assert!(!schedule("@hourly", "UTC").has_seconds());
        assert!(!s.describe().is_empty());
    }

    #[test]
    fn describe_is_english() {
        let d = schedule("0 12 * * MON-FRI", "UTC").describe();
        assert!(
            d.contains("12:00") && d.contains("Monday") && d.contains("Friday"),
            "{d}"
        );
        assert_eq!(schedule("0 3 * * *", "UTC").describe(), "At 03:00.");
        assert_eq!(schedule("*/5 * * * * *", "UTC").describe(), "At every 5 seconds.");
        // The description follows the day rule actually applied (OR vs Vixie's star-led AND).
        assert_eq!(
            schedule("0 0 13 * 5", "UTC").describe(),
            "At 00:00, on day 13 or Friday."
        );
        let and = schedule("0 0 */10 * 5", "UTC").describe();
        assert!(and.contains("if it is also Friday"), "{and}");
    }

    /// (expression, zone, after, expected fire instants in UTC)
    type Case = (&'static str, &'static str, &'static str, &'static [&'static str]);

    fn check_cases(cases: &[Case]) {
        for (expr, tz, after, expected) in cases {
            let s = schedule(expr, tz);
            let got = fires(&s, after, expected.len());
            assert_eq!(got, utcs(expected), "{expr} in {tz} after {after}");
            // next_after chains to the same instants.
            let mut at = utc(after);
            for want in utcs(expected) {
                at = s.next_after(at).expect("a next fire");
                assert_eq!(at, want, "{expr} in {tz}: next_after chain");
            }
        }
    }

    #[test]
    fn basic_fire_times() {
        check_cases(&[
            (
                "* * * * *",
                "UTC",
                "2026-01-01T10:00:00Z",
                &["2026-01-01T10:01:00Z", "2026-01-01T10:02:00Z"],
            ),
            ("* * * * *", "UTC", "2026-01-01T10:00:30.5Z", &["2026-01-01T10:01:00Z"]),
            (
                "*/5 * * * * *",
                "UTC",
                "2026-01-01T10:00:00Z",
                &["2026-01-01T10:00:05Z", "2026-01-01T10:00:10Z", "2026-01-01T10:00:15Z"],
            ),
            (
                "*/5 * * * * *",
                "UTC",
                "2026-01-01T10:00:03.9Z",
                &["2026-01-01T10:00:05Z"],
            ),
            (
                "30 0 9 * * *",
                "UTC",
                "2026-01-01T00:00:00Z",
                &["2026-01-01T09:00:30Z", "2026-01-02T09:00:30Z"],
            ),
            ("@hourly", "UTC", "2026-01-01T10:00:00Z", &["2026-01-01T11:00:00Z"]),
            ("@midnight", "UTC", "2026-01-01T10:00:00Z", &["2026-01-02T00:00:00Z"]),
            ("@weekly", "UTC", "2026-01-01T10:00:00Z", &["2026-01-04T00:00:00Z"]),
            ("@monthly", "UTC", "2026-01-01T10:00:00Z", &["2026-02-01T00:00:00Z"]),
            ("@yearly", "UTC", "2026-01-01T10:00:00Z", &["2027-01-01T00:00:00Z"]),
            // Moscow has no DST: always UTC+3, winter and summer.
            (
                "0 3 * * *",
                "Europe/Moscow",
                "2026-01-09T12:00:00Z",
                &["2026-01-10T00:00:00Z", "2026-01-11T00:00:00Z"],
            ),
            (
                "0 3 * * *",
                "Europe/Moscow",
                "2026-06-01T12:00:00Z",
                &["2026-06-02T00:00:00Z"],
            ),
            (
                "0 9 * * *",
                "Europe/Berlin",
                "2026-01-01T00:00:00Z",
                &["2026-01-01T08:00:00Z"],
            ),
            (
                "0 9 * * *",
                "Europe/Berlin",
                "2026-07-01T00:00:00Z",
                &["2026-07-01T07:00:00Z"],
            ),
        ]);
    }

    #[test]
    fn next_after_is_strict() {
        let s = schedule("0 0 * * *", "UTC");
        let on = utc("2026-03-01T00:00:00Z");
        assert_eq!(s.next_after(on), Some(utc("2026-03-02T00:00:00Z")));
        assert_eq!(s.next_after(on - Duration::nanoseconds(1)), Some(on));
        assert!(s.upcoming(on, 0).is_empty());
    }

    #[test]
    fn five_fields_never_fire_off_the_minute() {
        let s = schedule("*/7 * * * *", "America/New_York");
        let list = s.upcoming(utc("2026-03-07T10:00:30.25Z"), 2000);
        assert_eq!(list.len(), 2000);
        assert!(list.iter().all(|t| t.second() == 0 && t.nanosecond() == 0));
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // 2026-01-13 is a Tuesday; Fridays are the 2nd, 9th, 16th, 23rd, 30th.
        check_cases(&[(
            "0 0 13 * 5",
            "UTC",
            "2026-01-01T00:00:00Z",
            &[
                "2026-01-02T00:00:00Z",
                "2026-01-09T00:00:00Z",
                "2026-01-13T00:00:00Z",
                "2026-01-16T00:00:00Z",
                "2026-01-23T00:00:00Z",
                "2026-01-30T00:00:00Z",
                "2026-02-06T00:00:00Z",
            ],
        )]);
        // Only one field restricted: that field alone decides.
        for t in schedule("0 0 * * 5", "UTC").upcoming(utc(NOW), 20) {
            assert_eq!(t.weekday(), Weekday::Fri);
        }
        for t in schedule("0 0 13 * ?", "UTC").upcoming(utc(NOW), 20) {
            assert_eq!(t.day(), 13);
        }
    }

    #[test]
    fn star_led_day_field_means_and_as_in_vixie() {
        // `*/10` starts with `*`: Vixie sets DOM_STAR, so the day must ALSO be a Friday.
        let list = schedule("0 0 */10 * 5", "UTC").upcoming(utc(NOW), 12);
        assert_eq!(list[0].with_timezone(&Utc), utc("2026-05-01T00:00:00Z"));
        for t in list {
            assert!(t.day() % 10 == 1 && t.weekday() == Weekday::Fri, "{t}");
        }
        // Same rule the other way round: `*/2` weekdays (Sun, Tue, Thu, Sat) AND the 1st.
        for t in schedule("0 0 1 * */2", "UTC").upcoming(utc(NOW), 12) {
            assert!(t.day() == 1 && t.weekday().num_days_from_sunday() % 2 == 0, "{t}");
        }
    }

    #[test]
    fn special_day_characters() {
        check_cases(&[
            // L: last day of the month, leap years included.
            (
                "0 0 L * *",
                "UTC",
                "2026-01-15T00:00:00Z",
                &["2026-01-31T00:00:00Z", "2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z"],
            ),
            ("0 0 L 2 *", "UTC", "2027-03-01T00:00:00Z", &["2028-02-29T00:00:00Z"]),
            // W: 2026-02-15 is a Sunday -> Monday 16th; 2026-08-15 a Saturday -> Friday 14th.
            ("0 0 15W 2 *", "UTC", "2026-01-01T00:00:00Z", &["2026-02-16T00:00:00Z"]),
            ("0 0 15W 8 *", "UTC", "2026-01-01T00:00:00Z", &["2026-08-14T00:00:00Z"]),
            // 2026-08-01 is a Saturday: 1W stays in August (Monday 3rd), not Friday 31 July.
            ("0 0 1W 8 *", "UTC", "2026-01-01T00:00:00Z", &["2026-08-03T00:00:00Z"]),
            // LW: the last weekday; 2026-01-31 is a Saturday.
            ("0 0 LW 1 *", "UTC", "2026-01-01T00:00:00Z", &["2026-01-30T00:00:00Z"]),
            // #: third Friday.
            (
                "0 0 * * 5#3",
                "UTC",
                "2026-01-01T00:00:00Z",
                &["2026-01-16T00:00:00Z", "2026-02-20T00:00:00Z"],
            ),
            (
                "0 0 * * FRI#3",
                "UTC",
                "2026-01-01T00:00:00Z",
                &["2026-01-16T00:00:00Z"],
            ),
            // Last Friday, three spellings.
            (
                "0 0 * * 5L",
                "UTC",
                "2026-01-01T00:00:00Z",
                &["2026-01-30T00:00:00Z", "2026-02-27T00:00:00Z"],
            ),
            ("0 0 * * 5#L", "UTC", "2026-01-01T00:00:00Z", &["2026-01-30T00:00:00Z"]),
            ("0 0 * * FRIL", "UTC", "2026-01-01T00:00:00Z", &["2026-01-30T00:00:00Z"]),
            // 7 is Sunday (as 0 is): 7L is the last Sunday.
            (
                "0 0 * * 7L",
                "UTC",
                "2026-01-01T00:00:00Z",
                &["2026-01-25T00:00:00Z", "2026-02-22T00:00:00Z"],
            ),
            ("0 0 * * 0L", "UTC", "2026-01-01T00:00:00Z", &["2026-01-25T00:00:00Z"]),
            ("0 0 * * 7", "UTC", "2026-01-01T00:00:00Z", &["2026-01-04T00:00:00Z"]),
        ]);
    }

    #[test]
    fn dst_spring_forward() {
        check_cases(&[
            // Fixed time in the gap: once, right after the jump (03:00 local), then back to normal.
            (
                "30 2 * * *",
                "Europe/Berlin",
                "2026-03-27T12:00:00Z",
                &["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
            ),
            (
                "30 2 * * *",
                "America/New_York",
                "2026-03-06T12:00:00Z",
                &["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"],
            ),
            // Six fields: still "right after the jump", not at :15 past.
            (
                "15 30 2 * * *",
                "America/New_York",
                "2026-03-08T00:00:00Z",
                &["2026-03-08T07:00:00Z"],
            ),
            // Two fixed times in the gap collapse to one run at the jump.
            (
                "0,30 2 * * *",
                "America/New_York",
                "2026-03-08T00:00:00Z",
                &["2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z", "2026-03-09T06:30:00Z"],
            ),
            // A fixed range (Debian: not `*`-led, so fixed): 02:00 runs at the jump, 03:00 is the same instant.
            (
                "0 1-3 * * *",
                "America/New_York",
                "2026-03-08T00:00:00Z",
                &["2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z", "2026-03-09T05:00:00Z"],
            ),
            // Interval patterns: nothing in the skipped hour, the rhythm goes on.
            (
                "*/15 * * * *",
                "Europe/Berlin",
                "2026-03-29T00:35:00Z",
                &["2026-03-29T00:45:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:15:00Z"],
            ),
            (
                "0 * * * *",
                "America/New_York",
                "2026-03-08T05:30:00Z",
                &["2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z"],
            ),
            // An interval pattern confined to the skipped hour simply has no fire that day.
            (
                "*/30 2 * * *",
                "Europe/Berlin",
                "2026-03-28T12:00:00Z",
                &["2026-03-30T00:00:00Z", "2026-03-30T00:30:00Z"],
            ),
            // Half-hour DST (Lord Howe, 02:00 -> 02:30, +10:30 -> +11): runs at 02:30 local.
            (
                "15 2 * * *",
                "Australia/Lord_Howe",
                "2026-10-03T12:00:00Z",
                &["2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"],
            ),
        ]);
    }

    #[test]
    fn dst_fall_back() {
        check_cases(&[
            // Fixed time in the repeated hour: once, in its first occurrence.
            (
                "30 2 * * *",
                "Europe/Berlin",
                "2026-10-23T12:00:00Z",
                &["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
            ),
            (
                "30 1 * * *",
                "America/New_York",
                "2026-10-30T12:00:00Z",
                &["2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"],
            ),
            // Asked from inside the repeated hour, past the first occurrence: tomorrow, not the repeat.
            (
                "30 2 * * *",
                "Europe/Berlin",
                "2026-10-25T00:45:00Z",
                &["2026-10-26T01:30:00Z"],
            ),
            (
                "30 2 * * *",
                "Europe/Berlin",
                "2026-10-25T01:15:00Z",
                &["2026-10-26T01:30:00Z"],
            ),
            // Fixed range: 01:00 once (EDT), then 02:00 and 03:00 EST.
            (
                "0 1-3 * * *",
                "America/New_York",
                "2026-11-01T00:00:00Z",
                &["2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z", "2026-11-01T08:00:00Z"],
            ),
            // Interval patterns fire in both copies: every 15 real minutes straight through.
            (
                "*/15 * * * *",
                "Europe/Berlin",
                "2026-10-24T23:40:00Z",
                &[
                    "2026-10-24T23:45:00Z",
                    "2026-10-25T00:00:00Z",
                    "2026-10-25T00:15:00Z",
                    "2026-10-25T00:30:00Z",
                    "2026-10-25T00:45:00Z",
                    "2026-10-25T01:00:00Z",
                    "2026-10-25T01:15:00Z",
                    "2026-10-25T01:30:00Z",
                    "2026-10-25T01:45:00Z",
                    "2026-10-25T02:00:00Z",
                ],
            ),
            (
                "0 * * * *",
                "America/New_York",
                "2026-11-01T03:30:00Z",
                &[
                    "2026-11-01T04:00:00Z",
                    "2026-11-01T05:00:00Z",
                    "2026-11-01T06:00:00Z",
                    "2026-11-01T07:00:00Z",
                ],
            ),
            // Asked from inside the first copy: the second copy is still ahead.
            (
                "*/30 * * * *",
                "Europe/Berlin",
                "2026-10-25T00:45:00Z",
                &["2026-10-25T01:00:00Z", "2026-10-25T01:30:00Z", "2026-10-25T02:00:00Z"],
            ),
            (
                "*/30 * * * *",
                "Europe/Berlin",
                "2026-10-25T00:30:00Z",
                &["2026-10-25T01:00:00Z"],
            ),
            (
                "*/30 * * * *",
                "Europe/Berlin",
                "2026-10-25T01:15:00Z",
                &["2026-10-25T01:30:00Z", "2026-10-25T02:00:00Z"],
            ),
            // A `*`-led minute makes it an interval job even with a fixed hour.
            (
                "*/30 2 * * *",
                "Europe/Berlin",
                "2026-10-24T23:00:00Z",
                &[
                    "2026-10-25T00:00:00Z",
                    "2026-10-25T00:30:00Z",
                    "2026-10-25T01:00:00Z",
                    "2026-10-25T01:30:00Z",
                    "2026-10-26T01:00:00Z",
                ],
            ),
        ]);
    }

    /// Zones and windows around 2026's transitions, plus a quiet one.
    const WINDOWS: &[(&str, &str, &str)] = &[
        ("Europe/Berlin", "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z"),
        ("Europe/Berlin", "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z"),
        ("America/New_York", "2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z"),
        ("America/New_York", "2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z"),
        ("Australia/Lord_Howe", "2026-04-03T00:00:00Z", "2026-04-06T00:00:00Z"),
        ("Europe/Moscow", "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z"),
    ];

    const PATTERNS: &[&str] = &[
        "*/15 * * * *",
        "0 * * * *",
        "30 2 * * *",
        "30 1 * * *",
        "0 1-3 * * *",
        "0,30 2 * * *",
        "*/30 2 * * *",
        "*/20 0 * * * *",
        "45 59 1 * * *",
        "@daily",
    ];

    #[test]
    fn successive_calls_never_repeat_or_go_back() {
        for (tz, from, to) in WINDOWS {
            for expr in PATTERNS {
                let s = schedule(expr, tz);
                let (mut at, end) = (utc(from), utc(to));
                let mut chain = Vec::new();
                while let Some(next) = s.next_after(at).filter(|t| *t <= end) {
                    assert!(next > at, "{expr} in {tz}: {next} after {at}");
                    chain.push(next);
                    at = next;
                }
                let listed = fires(&s, from, chain.len() + 1);
                assert_eq!(&listed[..chain.len()], &chain[..], "{expr} in {tz}: upcoming == chain");
            }
        }
    }

    #[test]
    fn backward_search_agrees_with_forward() {
        for (tz, from, to) in WINDOWS {
            for expr in PATTERNS {
                let s = schedule(expr, tz);
                let list: Vec<_> = s.fires_after(utc(from)).take_while(|t| *t <= utc(to)).collect();
                for pair in list.windows(2) {
                    assert_eq!(s.latest_at_or_before(pair[1]), Some(pair[1]), "{expr} {tz}");
                    assert_eq!(s.latest_before(pair[1]), Some(pair[0]), "{expr} {tz}");
                    let between = pair[0] + (pair[1] - pair[0]) / 2;
                    assert_eq!(
                        s.latest_at_or_before(between),
                        Some(pair[0]),
                        "{expr} {tz} at {between}"
                    );
                }
            }
        }
        assert_eq!(
            CronSchedule::parse_stored("0 0 30 2 *", "UTC").map(|s| s.latest_at_or_before(utc(NOW))),
            Ok(None)
        );
    }

    #[test]
    fn misfires_examples() {
        let s = schedule("* * * * *", "UTC");
        let (anchor, now) = (utc("2026-01-01T10:00:00Z"), utc("2026-01-01T10:05:30Z"));
        let cases = [
            // Latest (10:05) is 30s old: within 60s grace, so it runs; 10:01..10:04 are skipped.
            (
                60,
                Some("2026-01-01T10:05:00Z"),
                4,
                Some("2026-01-01T10:01:00Z"),
                Some("2026-01-01T10:04:00Z"),
            ),
            // Grace boundary is inclusive.
            (
                30,
                Some("2026-01-01T10:05:00Z"),
                4,
                Some("2026-01-01T10:01:00Z"),
                Some("2026-01-01T10:04:00Z"),
            ),
            // Out of grace: nothing runs, all five are skipped.
            (10, None, 5, Some("2026-01-01T10:01:00Z"), Some("2026-01-01T10:05:00Z")),
        ];
        for (grace, fire, skipped, first, last) in cases {
            let m = s.misfires(anchor, now, Duration::seconds(grace), 100_000);
            let want = Misfires {
                fire: fire.map(utc),
                skipped_count: skipped,
                first_skipped: first.map(utc),
                last_skipped: last.map(utc),
                truncated: false,
            };
            assert_eq!(m, want, "grace {grace}s");
        }
    }

    #[test]
    fn misfires_when_nothing_or_one_was_missed() {
        let s = schedule("* * * * *", "UTC");
        let nothing = Misfires {
            fire: None,
            skipped_count: 0,
            first_skipped: None,
            last_skipped: None,
            truncated: false,
        };
        let anchor = utc("2026-01-01T10:05:00Z");
        assert_eq!(
            s.misfires(anchor, utc("2026-01-01T10:05:59Z"), Duration::seconds(60), 100),
            nothing
        );
        assert_eq!(s.misfires(anchor, anchor, Duration::seconds(60), 100), nothing);
        assert_eq!(
            s.misfires(anchor, anchor - Duration::hours(1), Duration::seconds(60), 100),
            nothing
        );
        // Exactly one missed, at `now` itself: it runs and nothing is skipped.
        let one = s.misfires(anchor, utc("2026-01-01T10:06:00Z"), Duration::zero(), 100);
        assert_eq!(
            one,
            Misfires {
                fire: Some(utc("2026-01-01T10:06:00Z")),
                ..nothing.clone()
            }
        );
        // One missed, out of grace: skipped.
        let late = s.misfires(anchor, utc("2026-01-01T10:06:30Z"), Duration::seconds(10), 100);
        let at = Some(utc("2026-01-01T10:06:00Z"));
        assert_eq!(
            late,
            Misfires {
                skipped_count: 1,
                first_skipped: at,
                last_skipped: at,
                ..nothing
            }
        );
    }

    #[test]
    fn misfires_truncates_but_keeps_exact_fire_and_bounds() {
        let s = schedule("* * * * * *", "UTC");
        let (anchor, now) = (utc("2026-01-01T10:00:00Z"), utc("2026-01-01T10:05:30Z"));
        // 330 fires missed, only 100 counted.
        let m = s.misfires(anchor, now, Duration::seconds(10), 100);
        let want = Misfires {
            fire: Some(now),
            skipped_count: 100,
            first_skipped: Some(utc("2026-01-01T10:00:01Z")),
            last_skipped: Some(utc("2026-01-01T10:05:29Z")),
            truncated: true,
        };
        assert_eq!(m, want);
        // Out of grace (now is between fires): no fire, last skipped is the latest fire.
        let later = utc("2026-01-01T10:05:30.5Z");
        let m = s.misfires(anchor, later, Duration::milliseconds(100), 100);
        assert_eq!((m.fire, m.last_skipped, m.truncated), (None, Some(now), true));
        // Exactly max_scan missed is not truncated.
        let m = s.misfires(anchor, utc("2026-01-01T10:01:40Z"), Duration::zero(), 100);
        assert_eq!(
            (m.fire, m.skipped_count, m.truncated),
            (Some(utc("2026-01-01T10:01:40Z")), 99, false)
        );
        // max_scan 0 behaves as 1.
        let m = s.misfires(anchor, utc("2026-01-01T10:00:03Z"), Duration::zero(), 0);
        assert_eq!(
            (m.fire, m.skipped_count, m.first_skipped, m.truncated),
            (
                Some(utc("2026-01-01T10:00:03Z")),
                1,
                Some(utc("2026-01-01T10:00:01Z")),
                true
            )
        );
    }

    #[test]
    fn misfires_across_fall_back_counts_both_copies_of_interval_jobs() {
        // Berlin 2026-10-25: 02:00-03:00 happens twice. Anchor 01:50 CEST, now 03:05 CET.
        let s = schedule("*/30 * * * *", "Europe/Berlin");
        let m = s.misfires(
            utc("2026-10-24T23:50:00Z"),
            utc("2026-10-25T02:05:00Z"),
            Duration::minutes(10),
            1000,
        );
        // 02:00, 02:30 (CEST), 02:00, 02:30 (CET) skipped; 03:00 CET runs.
        assert_eq!(m.fire, Some(utc("2026-10-25T02:00:00Z")));
        assert_eq!(m.skipped_count, 4);
        assert_eq!(
            (m.first_skipped, m.last_skipped),
            (Some(utc("2026-10-25T00:00:00Z")), Some(utc("2026-10-25T01:30:00Z")))
        );
    }

    #[test]
    fn upcoming_is_in_the_schedule_zone() {
        let list = schedule("30 2 * * *", "Europe/Berlin").upcoming(utc("2026-03-28T12:00:00Z"), 2);
        let walls: Vec<String> = list.iter().map(|t| t.format("%Y-%m-%d %H:%M %Z").to_string()).collect();
        assert_eq!(walls, ["2026-03-29 03:00 CEST", "2026-03-30 02:30 CEST"]);
        assert_eq!(list[0].timezone(), chrono_tz::Europe::Berlin);
    }

    #[test]
    fn min_interval_samples_real_fire_times() {
        let from: DateTime<Utc> = "2026-11-25T00:00:00Z".parse().unwrap();
        let gap = |expr: &str| {
            CronSchedule::parse(expr, "UTC")
                .unwrap()
                .min_interval(from, 1000)
                .map(|d| d.num_seconds())
        };
        assert_eq!(gap("*/5 * * * *"), Some(300));
        assert_eq!(gap("0,1 * * * *"), Some(60));
        assert_eq!(gap("*/10 * * * * *"), Some(10));
        assert_eq!(gap("@daily"), Some(86_400));
        assert_eq!(gap("0 0 1 * *"), Some(28 * 86_400));
    }
}
