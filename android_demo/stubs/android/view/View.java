package android.view;

import android.content.Context;

public class View {
  public static final int VISIBLE = 0;
  public static final int GONE = 8;

  public interface OnClickListener {
    void onClick(View v);
  }

  public View(Context context) {
    throw new RuntimeException("Stub!");
  }

  public void setEnabled(boolean enabled) {
    throw new RuntimeException("Stub!");
  }

  public void setVisibility(int visibility) {
    throw new RuntimeException("Stub!");
  }

  public void setOnClickListener(OnClickListener l) {
    throw new RuntimeException("Stub!");
  }
}
