/** The JSON events of an OpenAI-style server-sent-events body (`data: ...\n\n`), `[DONE]` left out. */
export async function* sseEvents(body: unknown): AsyncGenerator<any> {
  let buf = '';
  const dec = new TextDecoder();
  for await (const part of body as AsyncIterable<Uint8Array>) {
    buf += dec.decode(part, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const data = buf.slice(0, i).replace(/^data: /, '');
      buf = buf.slice(i + 2);
      if (data !== '[DONE]') yield JSON.parse(data);
    }
  }
}

/** One greedy streamed completion (ignore_eos, token ids returned): its ids, finish reason, or the HTTP or in-stream error (the stream stops at it). */
export async function streamGreedy(url: string, prompt: string, maxTokens: number): Promise<{ ids: number[]; finish: string | null; error?: string }> {
  const r = await fetch(url + '/v1/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, return_token_ids: true, stream: true }),
  });
  if (r.status !== 200) return { ids: [], finish: null, error: `HTTP ${r.status}: ${await r.text()}` };
  const ids: number[] = [];
  let finish: string | null = null;
  for await (const ev of sseEvents(r.body)) {
    if (ev.error) return { ids, finish, error: JSON.stringify(ev.error) };
    for (const t of ev.choices[0].token_ids ?? []) ids.push(t);
    finish = ev.choices[0].finish_reason ?? finish;
  }
  return { ids, finish };
}
