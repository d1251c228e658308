package org.json;

public class JSONObject {
  public JSONObject(String json) throws JSONException {
    throw new RuntimeException("Stub!");
  }

  public String getString(String name) throws JSONException {
    throw new RuntimeException("Stub!");
  }

  public int getInt(String name) throws JSONException {
    throw new RuntimeException("Stub!");
  }

  public long getLong(String name) throws JSONException {
    throw new RuntimeException("Stub!");
  }

  public JSONObject getJSONObject(String name) throws JSONException {
    throw new RuntimeException("Stub!");
  }

  public JSONArray getJSONArray(String name) throws JSONException {
    throw new RuntimeException("Stub!");
  }

  public JSONArray optJSONArray(String name) {
    throw new RuntimeException("Stub!");
  }
}
