package org.json;

/** Checked on Android (extends Exception), unlike some desktop org.json builds. */
public class JSONException extends Exception {
  private static final long serialVersionUID = 1L;

  public JSONException(String s) {
    super(s);
  }
}
