//! `GET /v1/events`: the agent's event stream ([`crate::events`]) as server-sent events.
//!
//! Why SSE rather than NDJSON: a browser's `EventSource` reads it as is (and resumes with
//! `Last-Event-ID` by itself), curl shows it readably, and its `id:` field is the resume
//! cursor. Each message is one event: `id: INDEX` and `data: {json}` (the JSON is the whole
//! event, index included, so a client may ignore the SSE framing).
//!
//! Query: `topic=Task,Node` (repeatable, case-insensitive; `Stream` notices always pass),
//! `since=INDEX` (events after it; the header `Last-Event-ID` does the same), `follow=false`
//! (end the stream after the events kept now). Without `since` the stream starts at the oldest
//! event kept. A bad value, an unknown parameter, or a `since` ahead of the newest event (the
//! agent restarted: indexes restart with each incarnation) is `400`, with the reason.
//! `generation=G` (the `generation` of the reader's last event) avoids that: when the agent
//! is no longer generation G, `since` is ignored and the stream starts from the oldest event
//! kept, after a `Stream`/`Restarted` notice.
//!
//! Guarded like every read (`crate::api_auth`): open on loopback, the token off it.

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::{ApiState, error};
use crate::events::{EventLog, Kept, Topic};

/// Events read from the ring per lock.
const READ_BATCH: usize = 256;
/// A comment line this often keeps proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The routes of this module.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/v1/events", get(events))
}

/// A parsed `GET /v1/events` request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventQuery {
    /// Topics wanted; empty: all.
    pub topics: BTreeSet<Topic>,
    /// Events after this index; `None`: from the oldest kept.
    pub since: Option<u64>,
    /// Keep the stream open for new events.
    pub follow: bool,
    /// The generation of the agent the reader's `since` came from.
    pub generation: Option<u64>,
}

/// Parses the query string and `Last-Event-ID`; `Err` says what was wrong.
pub fn parse_query(query: Option<&str>, last_event_id: Option<&str>) -> Result<EventQuery, String> {
    let mut q = EventQuery {
        follow: true,
        ..EventQuery::default()
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "topic" => {
                for t in value.split(',').filter(|t| !t.is_empty()) {
                    q.topics.insert(t.parse()?);
                }
            }
            "since" => q.since = Some(parse_index("since", value)?),
            "generation" => {
                q.generation = Some(value.parse().map_err(|_| {
                    format!("generation={value:?} is not an agent generation (a whole number)")
                })?);
            }
            "follow" => {
                q.follow = match value {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    _ => return Err(format!("follow={value:?} is not true or false")),
                }
            }
            _ => {
                return Err(format!(
                    "unknown parameter {key:?}: use topic, since, generation or follow"
                ));
            }
        }
    }
    if q.since.is_none()
        && let Some(id) = last_event_id
    {
        q.since = Some(parse_index("Last-Event-ID", id.trim())?);
    }
    Ok(q)
}

fn parse_index(what: &str, value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{what}={value:?} is not an event index (a whole number from 0)"))
}

/// Reads the ring for one stream: a cursor, a filter and what is read but not yet sent.
struct Reader {
    log: EventLog,
    topics: BTreeSet<Topic>,
    cursor: u64,
    follow: bool,
    ready: VecDeque<Kept>,
    wake: tokio::sync::watch::Receiver<u64>,
}

impl Reader {
    fn wanted(&self, t: Topic) -> bool {
        t == Topic::Stream || self.topics.is_empty() || self.topics.contains(&t)
    }

    /// The next event to send, waiting for one when following; `None` ends the stream.
    async fn next(&mut self) -> Option<Kept> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(e);
            }
            // Mark the newest seen before reading, so an event pushed after the read wakes us.
            self.wake.borrow_and_update();
            let topics = self.topics.clone();
            let wanted =
                move |t: Topic| t == Topic::Stream || topics.is_empty() || topics.contains(&t);
            let read = self.log.read_after(self.cursor, &wanted, READ_BATCH);
            let moved = read.cursor != self.cursor;
            self.cursor = read.cursor;
            self.ready.extend(read.events);
            debug_assert!(self.ready.iter().all(|e| self.wanted(e.topic)));
            if !self.ready.is_empty() || moved {
                continue;
            }
            if !self.follow || self.log.is_closed() {
                return None;
            }
            if self.wake.changed().await.is_err() || self.log.is_closed() {
                return None;
            }
        }
    }
}

async fn events(
    State(s): State<ApiState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let last_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let q = match parse_query(query.as_deref(), last_id) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let log = s.events.clone();
    let newest = log.newest();
    let mut ready = VecDeque::new();
    // A reader whose `since` came from an earlier incarnation starts again from the oldest
    // event kept, told so; its index means nothing here.
    let restarted = q.generation.filter(|g| *g != s.id.generation);
    if let Some(previous) = restarted {
        ready.push_back(log.restarted_notice(previous));
    } else if let Some(since) = q.since
        && since > newest
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "since={since} is ahead of this agent's newest event ({newest}): indexes \
                 restart when the agent restarts (it is generation {}); read again without \
                 since, or pass the generation of your last event as generation=",
                s.id.generation
            ),
        );
    }
    let reader = Reader {
        wake: log.watch(),
        log,
        topics: q.topics,
        cursor: if restarted.is_some() {
            0
        } else {
            q.since.unwrap_or(0)
        },
        follow: q.follow,
        ready,
    };
    let stream = futures_util::stream::unfold(reader, |mut r| async move {
        let e = r.next().await?;
        Some((Ok::<_, Infallible>(sse_event(&e)), r))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

fn sse_event(e: &Kept) -> SseEvent {
    SseEvent::default().id(e.index.to_string()).data(&*e.json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_and_bad_ones_say_why() {
        let q = parse_query(Some("topic=Task,node&since=5&follow=false"), None).unwrap();
        assert_eq!(q.topics, BTreeSet::from([Topic::Task, Topic::Node]));
        assert_eq!((q.since, q.follow), (Some(5), false));
        let q = parse_query(None, Some("9")).unwrap();
        assert_eq!((q.since, q.follow), (Some(9), true));
        assert_eq!(
            parse_query(Some("since=3"), Some("9")).unwrap().since,
            Some(3)
        );
        for (bad, says) in [
            ("since=-1", "not an event index"),
            ("since=abc", "not an event index"),
            ("topic=Tasks", "unknown topic"),
            ("follow=maybe", "not true or false"),
            ("sinse=1", "unknown parameter"),
            ("generation=x", "not an agent generation"),
        ] {
            let err = parse_query(Some(bad), None).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
