// Edge fan-out from the admin API to the workers. The publishes of one event-loop turn travel to each worker as
// one IPC message, which the worker publishes in one turn: uWS drains a turn's messages to a subscriber in one
// write, so a burst of publishes costs each subscriber one send instead of one per message (the send is most of
// a delivery's cost). Order is kept: a batch holds the turn's publishes in the order they came.
import { MAX_PUBLISH_BATCH, type PublishEntry, type ToWorker } from '../worker/ipc.js';

/** A batch leaves at once past this many bytes of data (a turn of large publishes never builds one huge message), or past MAX_PUBLISH_BATCH publishes. */
const FLUSH_BYTES = 1024 * 1024;

export class PublishBatcher {
  readonly #send: (msg: ToWorker) => void;
  #queue: PublishEntry[] = [];
  #bytes = 0;
  #scheduled = false;

  constructor(send: (msg: ToWorker) => void) {
    this.#send = send;
  }

  add(topic: string, data: Buffer, binary: boolean): void {
    const entry: PublishEntry = { topic, data: data.toString('base64'), binary };
    this.#queue.push(entry);
    this.#bytes += entry.data.length;
    if (this.#bytes >= FLUSH_BYTES || this.#queue.length >= MAX_PUBLISH_BATCH) return this.flush();
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#onTurnEnd);
    }
  }

  /** Sends what is queued now (also before anything that must follow the publishes already accepted). */
  flush(): void {
    if (this.#queue.length === 0) return;
    const messages = this.#queue;
    this.#queue = [];
    this.#bytes = 0;
    this.#send({ type: 'publish', messages });
  }

  #onTurnEnd = (): void => {
    this.#scheduled = false;
    this.flush();
  };
}
