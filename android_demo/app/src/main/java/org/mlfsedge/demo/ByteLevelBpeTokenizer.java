package org.mlfsedge.demo;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The byte-level BPE tokenizer of GPT-2 style models (SmolLM2, Llama 3, Qwen2 without digit
 * splitting), read from a Hugging Face {@code tokenizer.json}: text to ids (added tokens first,
 * then the GPT-2 pre-tokenizer regex, bytes mapped to printable characters, merges applied by rank)
 * and ids back to text. Plain Java (java.util.regex and a small JSON reader, no org.json) so the
 * host JVM checks it against the Python {@code tokenizers} library (tests/test_android_tokenizer.py).
 *
 * <p>Only the configuration SmolLM2's file uses is accepted — model BPE, no normalizer, a ByteLevel
 * pre-tokenizer with its regex, no byte fallback, no subword prefix/suffix; anything else is an
 * IllegalArgumentException at load time rather than silently different ids.
 */
public final class ByteLevelBpeTokenizer {
  // The GPT-2 pre-tokenizer pattern, as tokenizers' ByteLevel has it, with \s spelled out as
  // Unicode White_Space (what Rust's regex means by \s; Java's \s is ASCII only, and Android does not
  // support UNICODE_CHARACTER_CLASS).
  private static final String WS = "\\t\\n\\x0B\\f\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029"
      + "\\u202F\\u205F\\u3000";
  private static final Pattern PRE_TOKENIZER = Pattern.compile(
      "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" + WS + "\\p{L}\\p{N}]+|[" + WS + "]+(?![^" + WS + "])|["
      + WS + "]+");

  private final Map<String, Integer> vocab;
  private final String[] idToToken;
  private final Map<String, Integer> mergeRanks;  // "left right" -> rank (lower merges first)
  private final String[] addedTokens;             // longest first, so the longest match wins
  private final boolean[] isAdded;
  private final Map<String, int[]> cache = new HashMap<>();
  private static final char[] BYTE_TO_CHAR = new char[256];
  private static final Map<Character, Integer> CHAR_TO_BYTE = new HashMap<>();

  static {
    // GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to 256, 257, ...
    int n = 0;
    for (int b = 0; b < 256; b++) {
      boolean printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      BYTE_TO_CHAR[b] = printable ? (char) b : (char) (256 + n++);
      CHAR_TO_BYTE.put(BYTE_TO_CHAR[b], b);
    }
  }

  private ByteLevelBpeTokenizer(Map<String, Integer> vocab, Map<String, Integer> mergeRanks,
      Map<String, Integer> added) {
    this.vocab = vocab;
    this.mergeRanks = mergeRanks;
    int size = 0;
    for (int id : vocab.values()) size = Math.max(size, id + 1);
    for (int id : added.values()) size = Math.max(size, id + 1);
    idToToken = new String[size];
    isAdded = new boolean[size];
    for (Map.Entry<String, Integer> e : vocab.entrySet()) idToToken[e.getValue()] = e.getKey();
    for (Map.Entry<String, Integer> e : added.entrySet()) {
      idToToken[e.getValue()] = e.getKey();
      isAdded[e.getValue()] = true;
      vocab.put(e.getKey(), e.getValue());
    }
    addedTokens = added.keySet().toArray(new String[0]);
    Arrays.sort(addedTokens, (a, b) -> b.length() - a.length());
  }

  /** Read a Hugging Face tokenizer.json (UTF-8); the stream is read to its end, not closed. */
  @SuppressWarnings("unchecked")
  public static ByteLevelBpeTokenizer fromTokenizerJson(InputStream in) throws IOException {
    ByteArrayOutputStream buf = new ByteArrayOutputStream();
    byte[] chunk = new byte[1 << 16];
    for (int r; (r = in.read(chunk)) > 0;) buf.write(chunk, 0, r);
    Object root = new Json(new String(buf.toByteArray(), StandardCharsets.UTF_8)).parse();
    Map<String, Object> top = asMap(root, "tokenizer.json");
    Map<String, Object> model = asMap(top.get("model"), "model");
    require("BPE".equals(model.get("type")), "model.type must be BPE, got " + model.get("type"));
    require(top.get("normalizer") == null, "a normalizer is not supported");
    require(!Boolean.TRUE.equals(model.get("byte_fallback")), "byte_fallback is not supported");
    require(isEmpty(model.get("continuing_subword_prefix")) && isEmpty(model.get("end_of_word_suffix")),
        "subword prefixes/suffixes are not supported");
    Map<String, Object> pre = asMap(top.get("pre_tokenizer"), "pre_tokenizer");
    require("ByteLevel".equals(pre.get("type")) && !Boolean.TRUE.equals(pre.get("add_prefix_space"))
        && !Boolean.FALSE.equals(pre.get("use_regex")),
        "pre_tokenizer must be ByteLevel with its regex and no prefix space, got " + pre.get("type"));

    Map<String, Integer> vocab = new HashMap<>();
    for (Map.Entry<String, Object> e : asMap(model.get("vocab"), "model.vocab").entrySet()) {
      vocab.put(e.getKey(), ((Number) e.getValue()).intValue());
    }
    Map<String, Integer> ranks = new HashMap<>();
    List<Object> merges = (List<Object>) model.get("merges");
    require(merges != null, "model.merges is missing");
    for (int i = 0; i < merges.size(); i++) {
      Object m = merges.get(i);
      // Two forms: ["a", "b"] (tokenizers >= 0.20) or "a b".
      String key = m instanceof List ? ((List<Object>) m).get(0) + " " + ((List<Object>) m).get(1) : (String) m;
      ranks.putIfAbsent(key, i);
    }
    Map<String, Integer> added = new LinkedHashMap<>();
    Object addedList = top.get("added_tokens");
    if (addedList != null) {
      for (Object a : (List<Object>) addedList) {
        Map<String, Object> t = asMap(a, "added token");
        added.put((String) t.get("content"), ((Number) t.get("id")).intValue());
      }
    }
    return new ByteLevelBpeTokenizer(vocab, ranks, added);
  }

  public int vocabSize() {
    return idToToken.length;
  }

  /** The id of a token string (e.g. "&lt;|im_end|&gt;"), or -1. */
  public int tokenId(String token) {
    Integer id = vocab.get(token);
    return id == null ? -1 : id;
  }

  /** Token ids of {@code text}; added tokens (e.g. {@code <|im_start|>}) in it become their own ids. */
  public int[] encode(String text) {
    if (text == null) throw new IllegalArgumentException("text must not be null");
    List<Integer> out = new ArrayList<>();
    int start = 0;
    while (start < text.length()) {
      int bestAt = text.length();
      String best = null;
      for (String a : addedTokens) {  // the earliest added token; at equal positions the longest
        int at = text.indexOf(a, start);
        if (at >= 0 && at < bestAt) {
          bestAt = at;
          best = a;
        }
      }
      encodeOrdinary(text.substring(start, bestAt), out);
      if (best == null) break;
      out.add(vocab.get(best));
      start = bestAt + best.length();
    }
    int[] ids = new int[out.size()];
    for (int i = 0; i < ids.length; i++) ids[i] = out.get(i);
    return ids;
  }

  private void encodeOrdinary(String text, List<Integer> out) {
    Matcher m = PRE_TOKENIZER.matcher(text);
    while (m.find()) {
      String word = m.group();
      int[] ids = cache.get(word);
      if (ids == null) {
        ids = bpe(word);
        if (cache.size() < 50000) cache.put(word, ids);
      }
      for (int id : ids) out.add(id);
    }
  }

  // One pre-token: its UTF-8 bytes as byte-level characters, then the lowest-ranked adjacent pair
  // merged (every occurrence, left to right) until no pair has a rank.
  private int[] bpe(String word) {
    byte[] bytes = word.getBytes(StandardCharsets.UTF_8);
    List<String> parts = new ArrayList<>(bytes.length);
    for (byte b : bytes) parts.add(String.valueOf(BYTE_TO_CHAR[b & 0xFF]));
    while (parts.size() > 1) {
      int bestRank = Integer.MAX_VALUE;
      String bestLeft = null;
      String bestRight = null;
      for (int i = 0; i + 1 < parts.size(); i++) {
        Integer r = mergeRanks.get(parts.get(i) + " " + parts.get(i + 1));
        if (r != null && r < bestRank) {
          bestRank = r;
          bestLeft = parts.get(i);
          bestRight = parts.get(i + 1);
        }
      }
      if (bestLeft == null) break;
      List<String> merged = new ArrayList<>(parts.size());
      for (int i = 0; i < parts.size(); i++) {
        if (i + 1 < parts.size() && parts.get(i).equals(bestLeft) && parts.get(i + 1).equals(bestRight)) {
          merged.add(bestLeft + bestRight);
          i++;
        } else {
          merged.add(parts.get(i));
        }
      }
      parts = merged;
    }
    int[] ids = new int[parts.size()];
    for (int i = 0; i < ids.length; i++) {
      Integer id = vocab.get(parts.get(i));
      if (id == null) throw new IllegalStateException("token '" + parts.get(i) + "' is not in the vocabulary");
      ids[i] = id;
    }
    return ids;
  }

  /** The text of {@code ids} (added tokens as their content); invalid UTF-8 becomes U+FFFD. */
  public String decode(int[] ids) {
    return new String(decodeBytes(ids, true), StandardCharsets.UTF_8);
  }

  /**
   * As {@link #decode}, but without a trailing incomplete UTF-8 character: what a stream can show
   * now, before the token that completes the character arrives.
   */
  public String decodeComplete(int[] ids) {
    return new String(decodeBytes(ids, false), StandardCharsets.UTF_8);
  }

  private byte[] decodeBytes(int[] ids, boolean keepIncompleteTail) {
    if (ids == null) throw new IllegalArgumentException("ids must not be null");
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    for (int id : ids) {
      if (id < 0 || id >= idToToken.length || idToToken[id] == null) {
        throw new IllegalArgumentException("token id " + id + " is outside the vocabulary [0, " + idToToken.length
            + ")");
      }
      String token = idToToken[id];
      if (isAdded[id]) {
        byte[] raw = token.getBytes(StandardCharsets.UTF_8);
        out.write(raw, 0, raw.length);
        continue;
      }
      for (int i = 0; i < token.length(); i++) {
        Integer b = CHAR_TO_BYTE.get(token.charAt(i));
        if (b != null) {
          out.write(b);
        } else {
          byte[] raw = String.valueOf(token.charAt(i)).getBytes(StandardCharsets.UTF_8);
          out.write(raw, 0, raw.length);
        }
      }
    }
    byte[] bytes = out.toByteArray();
    if (keepIncompleteTail) return bytes;
    // Walk back over continuation bytes to the last lead byte; drop it if its sequence is short.
    int end = bytes.length;
    int i = end - 1;
    while (i >= 0 && i > end - 4 && (bytes[i] & 0xC0) == 0x80) i--;
    if (i >= 0) {
      int lead = bytes[i] & 0xFF;
      int need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
      if (end - i < need) end = i;
    }
    return Arrays.copyOf(bytes, end);
  }

  // --- a minimal JSON reader (tokenizer.json only needs objects, arrays, strings, numbers) --------

  private static void require(boolean ok, String message) {
    if (!ok) throw new IllegalArgumentException("tokenizer.json: " + message);
  }

  private static boolean isEmpty(Object o) {
    return o == null || "".equals(o);
  }

  @SuppressWarnings("unchecked")
  private static Map<String, Object> asMap(Object o, String what) {
    require(o instanceof Map, what + " must be a JSON object");
    return (Map<String, Object>) o;
  }

  private static final class Json {
    private final String s;
    private int i;

    Json(String s) {
      this.s = s;
    }

    Object parse() {
      Object v = value();
      ws();
      require(i == s.length(), "trailing characters at offset " + i);
      return v;
    }

    private void ws() {
      while (i < s.length() && (s.charAt(i) == ' ' || s.charAt(i) == '\n' || s.charAt(i) == '\r'
          || s.charAt(i) == '\t')) {
        i++;
      }
    }

    private Object value() {
      ws();
      require(i < s.length(), "unexpected end");
      char c = s.charAt(i);
      if (c == '{') {
        i++;
        Map<String, Object> m = new LinkedHashMap<>();
        ws();
        if (s.charAt(i) == '}') {
          i++;
          return m;
        }
        while (true) {
          ws();
          require(s.charAt(i) == '"', "expected a key at offset " + i);
          String k = string();
          ws();
          require(s.charAt(i++) == ':', "expected ':' at offset " + (i - 1));
          m.put(k, value());
          ws();
          char d = s.charAt(i++);
          if (d == '}') return m;
          require(d == ',', "expected ',' or '}' at offset " + (i - 1));
        }
      }
      if (c == '[') {
        i++;
        List<Object> a = new ArrayList<>();
        ws();
        if (s.charAt(i) == ']') {
          i++;
          return a;
        }
        while (true) {
          a.add(value());
          ws();
          char d = s.charAt(i++);
          if (d == ']') return a;
          require(d == ',', "expected ',' or ']' at offset " + (i - 1));
        }
      }
      if (c == '"') return string();
      if (s.startsWith("true", i)) {
        i += 4;
        return Boolean.TRUE;
      }
      if (s.startsWith("false", i)) {
        i += 5;
        return Boolean.FALSE;
      }
      if (s.startsWith("null", i)) {
        i += 4;
        return null;
      }
      int start = i;
      while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) i++;
      require(i > start, "unexpected character at offset " + start);
      String num = s.substring(start, i);
      try {
        return num.matches("-?\\d+") ? (Number) Long.parseLong(num) : (Number) Double.parseDouble(num);
      } catch (NumberFormatException e) {
        throw new IllegalArgumentException("tokenizer.json: bad number " + num);
      }
    }

    private String string() {
      i++;  // the opening quote
      StringBuilder sb = new StringBuilder();
      while (true) {
        require(i < s.length(), "unterminated string");
        char c = s.charAt(i++);
        if (c == '"') return sb.toString();
        if (c != '\\') {
          sb.append(c);
          continue;
        }
        char e = s.charAt(i++);
        switch (e) {
          case 'n': sb.append('\n'); break;
          case 't': sb.append('\t'); break;
          case 'r': sb.append('\r'); break;
          case 'b': sb.append('\b'); break;
          case 'f': sb.append('\f'); break;
          case 'u':
            sb.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
            i += 4;
            break;
          default: sb.append(e);  // \" \\ \/
        }
      }
    }
  }
}
