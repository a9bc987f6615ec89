//! Follow-up questions: mentions of the bot in a thread, asked of its investigation.

use super::*;

#[derive(Debug, thiserror::Error)]
pub enum QuestionError {
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What became of a mention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Recorded as event `seq` of the investigation.
    Asked { investigation_id: String, seq: i64 },
    /// Its question is in the log already (read again after a restart).
    AlreadyAsked { investigation_id: String },
    /// The investigation takes no question now; the person was told in the thread.
    Refused { investigation_id: String, state: State },
    /// Not a thread of ours.
    NotOurs,
}

/// Follow-up questions: reads the configured rooms with `/sync`, and asks each mention
/// of the bot in one of our threads of the thread's investigation.
///
/// How far it read is kept in the bot's account data, so a restart reads on from
/// there (the first start ever reads from then on: older mentions are history). A
/// restart between a question and that save reads the mention again; it is not asked
/// twice because the investigation's log already holds the same question by the same
/// person from about then (the log is the record, and `Store::ask` takes no key).
/// Run it in one process: two would both ask a new mention.
pub struct MatrixQuestions {
    sink: Arc<MatrixSink>,
    ledger: Ledger,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// How long one `/sync` waits for news.
    wait: Duration,
    cursor: Option<String>,
    saved: Option<Instant>,
}

impl MatrixQuestions {
    pub fn new(sink: Arc<MatrixSink>, ledger: Ledger, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        MatrixQuestions { sink, ledger, store, clock, wait: Duration::from_secs(30), cursor: None, saved: None }
    }

    /// How long one `/sync` waits for news (30 s unless set).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Asks questions until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                result = self.step() => match result {
                    Ok(_) => failures = 0,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let pause = (BACKOFF * 2u32.saturating_pow(failures.min(6))).min(LONGEST_WAIT);
                        warn!(sink = SINK_NAME, error = %e, ?pause, "reading Matrix questions failed; trying again");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                },
            }
        }
    }

    /// One `/sync`: the mentions it brought and what became of each.
    pub async fn step(&mut self) -> Result<Vec<(Mention, Handled)>, QuestionError> {
        if self.cursor.is_none() {
            self.cursor = self.sink.saved_cursor().await?;
        }
        let Some(since) = self.cursor.clone() else {
            self.read_from_now().await?;
            return Ok(Vec::new());
        };
        let batch = match self.sink.poll_mentions(Some(&since), self.wait).await {
            Ok(batch) => batch,
            Err(ChatError::Refused(why)) => {
                // A position the homeserver no longer takes: start again from now (if
                // the homeserver takes nothing, the position stays for the next try).
                warn!(sink = SINK_NAME, why, "the Matrix read position was refused; reading from now on");
                self.read_from_now().await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        let mut handled = Vec::new();
        for mention in batch.mentions {
            let outcome = self.handle(&mention).await?;
            handled.push((mention, outcome));
        }
        let due = self.saved.is_none_or(|at| at.elapsed() >= SAVE_EVERY);
        if batch.next_batch != since && (!handled.is_empty() || due) {
            self.sink.save_cursor(&batch.next_batch).await?;
            self.saved = Some(Instant::now());
        }
        self.cursor = Some(batch.next_batch);
        Ok(handled)
    }

    /// Starts reading at the rooms' present: what came before is history.
    pub(super) async fn read_from_now(&mut self) -> Result<(), QuestionError> {
        let now = self.sink.poll_mentions(None, Duration::ZERO).await?;
        self.sink.save_cursor(&now.next_batch).await?;
        self.saved = Some(Instant::now());
        info!(sink = SINK_NAME, "reading Matrix questions from now on");
        self.cursor = Some(now.next_batch);
        Ok(())
    }

    pub(super) async fn handle(&self, mention: &Mention) -> Result<Handled, QuestionError> {
        let thread_ref = mention.thread_ref().to_string();
        let Some(id) = self.ledger.investigation_of(SINK_NAME, &thread_ref).await? else {
            debug!(thread = %thread_ref, "a mention in a thread that is not an investigation's");
            return Ok(Handled::NotOurs);
        };
        if self.already_asked(&id, mention).await? {
            return Ok(Handled::AlreadyAsked { investigation_id: id });
        }
        let input = Input::QuestionAsked { question: mention.question.clone(), asked_by: Some(mention.sender.clone()) };
        match self.store.ask(&id, &input, self.clock.now()).await? {
            Asked::Queued { seq } => {
                info!(investigation = %id, asked_by = %mention.sender, seq, "a question from Matrix");
                Ok(Handled::Asked { investigation_id: id, seq })
            }
            Asked::Refused(state) => {
                let text = format!(
                    "I am still on this investigation ({}); ask me again once it has finished.",
                    state.as_str()
                );
                self.sink.reply(mention, &text).await?;
                Ok(Handled::Refused { investigation_id: id, state })
            }
            Asked::NotFound => Ok(Handled::NotOurs),
        }
    }

    /// Whether the log holds this person's same question from about when it was sent.
    pub(super) async fn already_asked(&self, id: &str, mention: &Mention) -> Result<bool, QuestionError> {
        let since = chrono::DateTime::from_timestamp_millis(mention.sent_at_ms).unwrap_or_default() - CLOCK_SKEW;
        let mut after = 0;
        loop {
            let events = self.store.events(id, after, 500).await?;
            let Some(last) = events.last() else { return Ok(false) };
            after = last.seq;
            let same = |e: &crate::store::StoredEvent| {
                e.kind == "question.asked"
                    && e.at >= since
                    && e.data["question"].as_str() == Some(mention.question.as_str())
                    && e.data["asked_by"].as_str() == Some(mention.sender.as_str())
            };
            if events.iter().any(same) {
                return Ok(true);
            }
        }
    }
}
