// AudioWorklet: the microphone as 16 kHz mono 16-bit PCM, posted every 100 ms (1600 samples)
// with the frame's peak level. Resampling is linear interpolation from the context's rate.
class PcmWorklet extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / 16000;
    this.position = 0;
    this.out = new Int16Array(1600);
    this.filled = 0;
    this.peak = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    while (this.position < channel.length) {
      const i = Math.floor(this.position);
      const frac = this.position - i;
      const a = channel[i], b = i + 1 < channel.length ? channel[i + 1] : a;
      const v = Math.max(-1, Math.min(1, a + (b - a) * frac));
      this.peak = Math.max(this.peak, Math.abs(v));
      this.out[this.filled++] = v < 0 ? v * 0x8000 : v * 0x7fff;
      if (this.filled === this.out.length) {
        this.port.postMessage({ pcm: this.out.buffer, peak: this.peak }, [this.out.buffer]);
        this.out = new Int16Array(1600);
        this.filled = 0;
        this.peak = 0;
      }
      this.position += this.ratio;
    }
    this.position -= channel.length;
    return true;
  }
}

registerProcessor("pcm-worklet", PcmWorklet);
