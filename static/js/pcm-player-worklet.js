// AudioWorklet: plays queued 16 kHz mono 16-bit PCM without gaps (run it in an AudioContext
// made at 16 kHz). Messages in: {pcm: ArrayBuffer} queues a chunk; {clear: id} drops everything
// queued at once (barge-in). Messages out: {played, queued} in samples, about every 50 ms while
// playing and when the queue runs dry; after a clear, {silent: id, dropped, played, queued} from
// the first render quantum that played nothing of what was dropped (the player is silent).
class PcmPlayer extends AudioWorkletProcessor {
  constructor() {
    super();
    this.chunks = [];
    this.offset = 0; // samples of chunks[0] already played
    this.queued = 0;
    this.played = 0;
    this.sinceReport = 0;
    this.cleared = null; // {id, dropped} until the next render reports it silent
    this.port.onmessage = (m) => {
      if (m.data.clear) {
        const dropped = this.queued;
        this.chunks = [];
        this.offset = 0;
        this.queued = 0;
        this.cleared = { id: m.data.clear, dropped };
      } else if (m.data.pcm) {
        const chunk = new Int16Array(m.data.pcm);
        this.chunks.push(chunk);
        this.queued += chunk.length;
      }
    };
  }

  report() {
    this.port.postMessage({ played: this.played, queued: this.queued });
    this.sinceReport = 0;
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    let i = 0;
    const had = this.queued > 0;
    while (i < out.length && this.chunks.length) {
      const chunk = this.chunks[0];
      const n = Math.min(out.length - i, chunk.length - this.offset);
      for (let k = 0; k < n; k++) out[i + k] = chunk[this.offset + k] / 0x8000;
      i += n;
      this.offset += n;
      if (this.offset === chunk.length) { this.chunks.shift(); this.offset = 0; }
    }
    for (; i < out.length; i++) out[i] = 0;
    if (had) {
      const playedNow = Math.min(out.length, this.queued);
      this.played += playedNow;
      this.queued -= playedNow;
      this.sinceReport += playedNow;
      if (this.sinceReport >= 800 || this.queued === 0) this.report();
    }
    if (this.cleared) {
      // This quantum rendered nothing of the dropped audio: say so once.
      const { id, dropped } = this.cleared;
      this.cleared = null;
      this.port.postMessage({ silent: id, dropped, played: this.played, queued: this.queued });
      this.sinceReport = 0;
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    return true;
  }
}

registerProcessor("pcm-player", PcmPlayer);
